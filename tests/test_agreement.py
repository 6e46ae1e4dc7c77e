"""Agreement statistics checked against hand-computed tables and the libraries they wrap."""

from __future__ import annotations

import json
import math

import krippendorff
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from mistralmeter.agreement import (
    MIN_N,
    calibration_buckets,
    five_point_to_judge_scale,
    judge_to_five_point,
    judge_to_five_point_continuous,
    mean_by_group,
    mean_with_t_interval,
    rating_distribution,
    score_agreement,
)
from mistralmeter.pairwise_agreement import PairRecord, combined_verdict, pairwise_agreement
from mistralmeter.rater_agreement import inter_rater_agreement, krippendorff_alpha

T_975_DF1 = 12.706204736174694  # t quantile 0.975 with 1 degree of freedom
T_975_DF2 = 4.302652729749462  # t quantile 0.975 with 2 degrees of freedom


def assert_plain_json_types(value):
    """Fail on any numpy scalar or other type that is not plain JSON."""
    if isinstance(value, dict):
        for item in value.values():
            assert_plain_json_types(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json_types(item)
    else:
        assert type(value) in (int, float, str, bool, type(None)), f"{value!r} is {type(value)}"


# --- scale mappings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "rating"),
    [
        (0, 1),
        (1.24, 1),
        (1.25, 2),  # 1.25 * 0.4 = 0.5, rounded half up
        (2.5, 2),
        (3.75, 3),  # 1.5 rounds up, not to even
        (5, 3),
        (6.25, 4),  # 2.5 rounds up (Python's round() would give 2)
        (7.5, 4),
        (8.74, 4),
        (8.75, 5),
        (10, 5),
    ],
)
def test_judge_to_five_point_table(score, rating):
    assert judge_to_five_point(score) == rating
    assert type(judge_to_five_point(score)) is int


@pytest.mark.parametrize("score", [-0.1, 10.01, math.nan, math.inf, True, "7"])
def test_judge_to_five_point_rejects_out_of_range(score):
    with pytest.raises(ValueError, match="judge score"):
        judge_to_five_point(score)


def test_judge_to_five_point_continuous_is_linear():
    assert judge_to_five_point_continuous(0) == 1.0
    assert judge_to_five_point_continuous(5) == 3.0
    assert judge_to_five_point_continuous(7.5) == 4.0
    assert judge_to_five_point_continuous(10) == 5.0


@pytest.mark.parametrize(
    ("rating", "score"), [(1, 0.0), (2, 2.5), (3, 5.0), (3.5, 6.25), (5, 10.0)]
)
def test_five_point_to_judge_scale_table(rating, score):
    assert five_point_to_judge_scale(rating) == score


@pytest.mark.parametrize("rating", [0, 0.99, 5.01, 6])
def test_five_point_to_judge_scale_rejects_out_of_range(rating):
    with pytest.raises(ValueError, match="rating must be from 1 to 5"):
        five_point_to_judge_scale(rating)


# --- score_agreement -------------------------------------------------------------------


def test_score_agreement_correlations_four_rows_by_hand():
    # human 1,2,3,4 and judge 2,6,4,10. Judge ranks are 1,3,2,4, so d = 0,-1,1,0 and
    # sum d^2 = 2, giving rho = 1 - 6*2 / (4 * (16 - 1)) = 0.8.
    # Pearson: human deviations -1.5,-0.5,0.5,1.5 and judge deviations (mean 5.5)
    # -3.5,0.5,-1.5,4.5. Sxy = 5.25 - 0.25 - 0.75 + 6.75 = 11, Sxx = 5, Syy = 35,
    # r = 11 / sqrt(175) = 0.831522.
    # With n = 4 the t-test has 2 degrees of freedom, where the two-sided p-value
    # simplifies to 1 - |coefficient|: 0.2 for rho and 0.168478 for r.
    human, judge = [1, 2, 3, 4], [2, 6, 4, 10]
    result = score_agreement(human, judge)

    assert result["n"] == 4
    assert result["spearman"]["n"] == 4
    assert result["spearman"]["rho"] == pytest.approx(0.8)
    assert result["spearman"]["p_value"] == pytest.approx(0.2)
    assert result["spearman"]["reason"] is None
    assert result["pearson"]["r"] == pytest.approx(11 / math.sqrt(175))
    assert result["pearson"]["p_value"] == pytest.approx(1 - 11 / math.sqrt(175))
    assert result["pearson"]["reason"] is None

    assert result["spearman"]["rho"] == pytest.approx(stats.spearmanr(human, judge).statistic)
    assert result["pearson"]["r"] == pytest.approx(stats.pearsonr(human, judge).statistic)
    assert result["pearson"]["p_value"] == pytest.approx(stats.pearsonr(human, judge).pvalue)


def test_score_agreement_kappa_two_categories_by_hand():
    # human 1,1,2,2 and judge 0,2.5,2.5,2.5 -> 1,2,2,2 on the 1-5 scale.
    # Observed: one run at (1,2) with weight (1-2)^2 = 1, so sum w*O = 1.
    # Expected counts E(i,j) = rows_i * cols_j / n with rows {1: 2, 2: 2}, cols {1: 1, 2: 3}:
    # E(1,2) = 2*3/4 = 1.5 and E(2,1) = 2*1/4 = 0.5, both weight 1, so sum w*E = 2.
    # kappa = 1 - 1/2 = 0.5.
    result = score_agreement([1, 1, 2, 2], [0, 2.5, 2.5, 2.5])

    assert result["quadratic_weighted_kappa"] == {
        "n": 4,
        "kappa": pytest.approx(0.5),
        "reason": None,
    }


def test_score_agreement_kappa_four_categories_by_hand():
    # human 1,2,3,5 and judge 2.5,2.5,5,7.5 -> 2,2,3,4 on the 1-5 scale.
    # Observed: (1,2) weight 1 and (5,4) weight 1, so sum w*O = 2.
    # Expected: sum over i,j of rows_i * cols_j * (i-j)^2 / 4, rows {1,2,3,5: 1 each},
    # cols {2: 2, 3: 1, 4: 1}:
    #   i=1: 2*1 + 1*4 + 1*9 = 15    i=2: 0 + 1 + 4 = 5
    #   i=3: 2*1 + 0 + 1 = 3         i=5: 2*9 + 4 + 1 = 23
    # sum w*E = 46 / 4 = 11.5, kappa = 1 - 2 / 11.5 = 19/23.
    human, judge = [1, 2, 3, 5], [2.5, 2.5, 5.0, 7.5]
    kappa = score_agreement(human, judge)["quadratic_weighted_kappa"]["kappa"]

    assert kappa == pytest.approx(19 / 23)
    expected = cohen_kappa_score(
        [1, 2, 3, 5],
        [judge_to_five_point(s) for s in judge],
        weights="quadratic",
        labels=[1, 2, 3, 4, 5],
    )
    assert kappa == pytest.approx(expected)


def test_score_agreement_kappa_rounds_mean_ratings_half_up():
    # Mean ratings 2.5 and 3.5 round to 3 and 4, matching the judge's 5 and 7.5.
    result = score_agreement([2.5, 3.5], [5, 7.5])

    assert result["quadratic_weighted_kappa"]["kappa"] == 1.0


def test_score_agreement_kappa_perfect_agreement_is_one():
    result = score_agreement([1, 3, 5, 4], [0, 5, 10, 7.5])

    assert result["quadratic_weighted_kappa"]["kappa"] == 1.0
    assert result["spearman"]["rho"] == pytest.approx(1.0)


def test_score_agreement_offset_two_runs_by_hand():
    # Judge 5 and 7.5 map to 3.0 and 4.0, so judge minus human is 3-2 = 1 and 4-4 = 0.
    # mean 0.5, s = sqrt(0.25 + 0.25) = 0.707107, s/sqrt(2) = 0.5,
    # half width = t(0.975, 1) * 0.5 = 6.353102.
    offset = score_agreement([2, 4], [5, 7.5])["mean_offset"]

    assert offset["n"] == 2
    assert offset["scale"] == "1-5"
    assert offset["mean"] == pytest.approx(0.5)
    assert offset["ci_low"] == pytest.approx(0.5 - T_975_DF1 * 0.5)
    assert offset["ci_high"] == pytest.approx(0.5 + T_975_DF1 * 0.5)
    assert offset["reason"] is None


def test_score_agreement_offset_three_runs_by_hand():
    # Judge 5, 5, 10 map to 3, 3, 5; human 3, 2, 4; differences 0, 1, 1.
    # mean 2/3, squared deviations 4/9 + 1/9 + 1/9 = 2/3, variance (2/3)/2 = 1/3,
    # s/sqrt(3) = sqrt(1/3)/sqrt(3) = 1/3, half width = t(0.975, 2) / 3 = 1.434218.
    offset = score_agreement([3, 2, 4], [5, 5, 10])["mean_offset"]

    assert offset["mean"] == pytest.approx(2 / 3)
    assert offset["ci_low"] == pytest.approx(2 / 3 - T_975_DF2 / 3)
    assert offset["ci_high"] == pytest.approx(2 / 3 + T_975_DF2 / 3)


def test_score_agreement_offset_judge_scale_is_scaled_copy():
    # On the 0-10 scale the human ratings 2 and 4 are 2.5 and 7.5, so the differences
    # are 2.5 and 0: exactly 2.5 times the 1-5 differences.
    result = score_agreement([2, 4], [5, 7.5])
    judge_scale = result["mean_offset_judge_scale"]

    assert judge_scale["scale"] == "0-10"
    assert judge_scale["mean"] == pytest.approx(1.25)
    assert judge_scale["ci_low"] == pytest.approx(2.5 * result["mean_offset"]["ci_low"])
    assert judge_scale["ci_high"] == pytest.approx(2.5 * result["mean_offset"]["ci_high"])


def test_score_agreement_empty_input():
    result = score_agreement([], [])

    assert result["n"] == 0
    assert result["spearman"]["rho"] is None
    assert (
        result["spearman"]["reason"]
        == "need at least 3 runs rated by both people and the judge; have 0"
    )
    assert result["pearson"]["r"] is None
    assert result["quadratic_weighted_kappa"]["kappa"] is None
    assert result["quadratic_weighted_kappa"]["reason"] == (
        "need at least 2 runs rated by both people and the judge; have 0"
    )
    assert result["mean_offset"]["mean"] is None
    assert result["mean_offset"]["ci_low"] is None
    assert result["statement"] == (
        "not enough runs rated by both people and the judge to say anything (n=0; need at least 3)"
    )


def test_score_agreement_one_run():
    result = score_agreement([4], [8])

    assert (
        result["spearman"]["reason"]
        == "need at least 3 runs rated by both people and the judge; have 1"
    )
    assert result["quadratic_weighted_kappa"]["kappa"] is None
    assert result["quadratic_weighted_kappa"]["reason"] == (
        "need at least 2 runs rated by both people and the judge; have 1"
    )
    assert result["mean_offset"]["mean"] is None
    assert (
        result["mean_offset"]["reason"]
        == "need at least 2 runs rated by both people and the judge; have 1"
    )
    assert result["statement"] == (
        "not enough runs rated by both people and the judge to say anything (n=1; need at least 3)"
    )


def test_score_agreement_two_runs():
    result = score_agreement([2, 4], [5, 7.5])

    assert result["spearman"]["rho"] is None
    assert (
        result["spearman"]["reason"]
        == "need at least 3 runs rated by both people and the judge; have 2"
    )
    assert result["pearson"]["r"] is None
    assert (
        result["pearson"]["reason"]
        == "need at least 3 runs rated by both people and the judge; have 2"
    )
    assert result["quadratic_weighted_kappa"]["kappa"] is not None
    assert result["mean_offset"]["mean"] is not None
    assert result["statement"] == (
        "not enough runs rated by both people and the judge to say anything (n=2; need at least 3)"
    )


def test_score_agreement_all_human_ratings_equal():
    result = score_agreement([3, 3, 3], [2, 6, 4])

    assert result["spearman"]["rho"] is None
    assert result["spearman"]["p_value"] is None
    assert result["spearman"]["reason"] == "all human ratings are equal (3)"
    assert result["pearson"]["r"] is None
    assert result["pearson"]["reason"] == "all human ratings are equal (3)"
    # Judge 2, 6, 4 map to 2, 3, 3 on the 1-5 scale, so kappa is defined (and 0: the
    # people's constant column makes observed and expected disagreement equal).
    assert result["quadratic_weighted_kappa"]["kappa"] == pytest.approx(0.0)
    assert "Spearman rho and Pearson r are undefined because all human ratings are equal (3)" in (
        result["statement"]
    )


def test_score_agreement_all_judge_scores_equal():
    result = score_agreement([1, 2, 3], [7, 7, 7])

    assert result["spearman"]["rho"] is None
    assert result["spearman"]["reason"] == "all judge scores are equal (7)"


def test_score_agreement_single_category_kappa_undefined():
    # Every rating and every mapped judge score is 3, so kappa is 0/0.
    result = score_agreement([3, 3, 3], [5, 5.5, 4.5])

    assert result["quadratic_weighted_kappa"]["kappa"] is None
    assert (
        result["quadratic_weighted_kappa"]["reason"]
        == "people and the judge used only one category (3)"
    )


def test_score_agreement_no_warnings_on_degenerate_input(recwarn):
    score_agreement([3, 3, 3], [5, 5, 5])

    assert len(recwarn) == 0


def test_score_agreement_statement_names_offset_direction():
    # Judge 10 on every run maps to 5.0; people give 3, 4, 3, 4, so the judge is higher.
    result = score_agreement([3, 4, 3, 4], [10, 10, 9, 10])

    assert result["mean_offset"]["ci_low"] > 0
    assert "The judge scores" in result["statement"]
    assert "points higher than people on the 1-5 scale" in result["statement"]
    assert result["statement"].startswith("On 4 runs rated by both people and the judge, ")


def test_score_agreement_returns_plain_python_types():
    result = score_agreement([1, 2, 3, 4, 5], [1, 3, 5, 8, 9.5])

    assert_plain_json_types(result)
    json.dumps(result)


@pytest.mark.parametrize(
    ("human", "judge", "message"),
    [
        ([1, 2], [5], "one value per run"),
        ([0], [5], "human rating at index 0"),
        ([6], [5], "human rating at index 0"),
        ([3], [11], "judge score at index 0"),
        ([3], [math.nan], "judge score at index 0 must be a finite number"),
    ],
)
def test_score_agreement_rejects_invalid_input(human, judge, message):
    with pytest.raises(ValueError, match=message):
        score_agreement(human, judge)


def test_mean_with_t_interval_needs_two_values():
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_with_t_interval([3.0])


# --- Krippendorff's alpha -----------------------------------------------------------------

# Reliability data from Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability":
# 4 observers, 12 units, values 1-5, None where an observer did not code the unit.
# The paper reports alpha = 0.743 nominal, 0.815 ordinal, 0.849 interval.
TEXTBOOK = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def textbook_units():
    units = {}
    for unit in range(12):
        units[f"u{unit + 1}"] = {
            observer: values[unit]
            for observer, values in TEXTBOOK.items()
            if values[unit] is not None
        }
    return units


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_textbook_example(level, published):
    result = krippendorff_alpha(textbook_units(), level=level)

    # Unit 12 has a single value, so 11 of the 12 units are pairable.
    assert result["n_units"] == 11
    assert result["n_raters"] == 4
    assert result["level"] == level
    assert round(result["alpha"], 3) == published
    assert result["reason"] is None
    assert type(result["alpha"]) is float


def test_krippendorff_alpha_interval_by_hand():
    # Units (1, 2) and (3, 3); n = 4 pairable values.
    # Observed: unit 1 has ordered pairs (1,2), (2,1) with delta^2 = 1, divided by m_u - 1 = 1,
    # so Do = 2 / 4 = 0.5. Expected over all values 1, 2, 3, 3: unordered squared distances
    # 1 + 4 + 4 + 1 + 1 + 0 = 11, ordered 22, De = 22 / (4 * 3) = 11/6.
    # alpha = 1 - 0.5 / (11/6) = 1 - 3/11 = 8/11.
    units = {"r1": {"ann": 1, "bob": 2}, "r2": {"ann": 3, "bob": 3}}

    assert krippendorff_alpha(units, level="interval")["alpha"] == pytest.approx(8 / 11)


def test_krippendorff_alpha_all_values_identical():
    units = {"r1": {"ann": 4, "judge": 4}, "r2": {"ann": 4, "judge": 4}}

    result = krippendorff_alpha(units)

    assert result["alpha"] is None
    assert result["reason"] == "all values identical"


def test_krippendorff_alpha_one_rater():
    result = krippendorff_alpha({"r1": {"ann": 4}, "r2": {"ann": 2}})

    assert result["alpha"] is None
    assert result["n_raters"] == 1
    assert result["reason"] == "need at least 2 raters; have 1"


def test_krippendorff_alpha_one_pairable_unit():
    result = krippendorff_alpha({"r1": {"ann": 4, "judge": 3}, "r2": {"ann": 2}})

    assert result["alpha"] is None
    assert result["n_units"] == 1
    assert result["reason"] == "need at least 2 runs rated by at least 2 raters each; have 1"


def test_krippendorff_alpha_no_units():
    result = krippendorff_alpha({})

    assert result["alpha"] is None
    assert result["n_units"] == 0
    assert result["reason"] == "need at least 2 raters; have 0"


def test_krippendorff_alpha_ordinal_rejects_fractions():
    with pytest.raises(ValueError, match="whole ratings"):
        krippendorff_alpha({"r1": {"ann": 3.5, "judge": 3}, "r2": {"ann": 2, "judge": 2}})


def test_krippendorff_alpha_interval_accepts_fractions():
    result = krippendorff_alpha(
        {"r1": {"ann": 3.5, "judge": 3}, "r2": {"ann": 2, "judge": 2}}, level="interval"
    )

    assert result["alpha"] is not None


def test_krippendorff_alpha_rejects_unknown_level():
    with pytest.raises(ValueError, match="level must be one of"):
        krippendorff_alpha({}, level="ratio")


def test_inter_rater_agreement_by_hand():
    # Runs rated by several people: r1 (3, 3) and r2 (2, 4, 2); r3 has one rating and is left out.
    # Exact agreement: r1 1/1, r2 1 of 3 pairs, mean (1 + 1/3) / 2 = 2/3.
    # Ordinal alpha: values 3,3,2,4,2 give n_2 = 2, n_3 = 2, n_4 = 1 and distances
    # d(2,3) = (2+2 - 2)^2 = 4, d(2,4) = (2+2+1 - 1.5)^2 = 12.25, d(3,4) = (2+1 - 1.5)^2 = 2.25.
    # Do: r2 has 4 ordered (2,4) pairs, 4 * 12.25 / (3 - 1) = 24.5, so Do = 24.5 / 5 = 4.9.
    # De: unordered 4*4 + 2*2.25 + 2*12.25 = 45, ordered 90, De = 90 / (5 * 4) = 4.5.
    # alpha = 1 - 4.9 / 4.5 = -4/45.
    units = {"r1": {"ann": 3, "bob": 3}, "r2": {"ann": 2, "bob": 4, "cy": 2}, "r3": {"ann": 5}}

    result = inter_rater_agreement(units)

    assert result["n_units"] == 2
    assert result["n_raters"] == 3
    assert result["mean_pairwise_exact_agreement"] == pytest.approx(2 / 3)
    assert result["alpha"] == pytest.approx(-4 / 45)
    assert result["reason"] is None


def test_inter_rater_agreement_matches_krippendorff_package():
    units = {
        "r1": {"ann": 3, "bob": 3},
        "r2": {"ann": 2, "bob": 4, "cy": 2},
        "r3": {"bob": 5, "cy": 4},
    }
    matrix = [[3, 2, np.nan], [3, 4, 5], [np.nan, 2, 4]]

    result = inter_rater_agreement(units)

    assert result["alpha"] == pytest.approx(
        krippendorff.alpha(matrix, level_of_measurement="ordinal")
    )


def test_inter_rater_agreement_no_shared_runs():
    result = inter_rater_agreement({"r1": {"ann": 3}, "r2": {"bob": 4}})

    assert result["n_units"] == 0
    assert result["alpha"] is None
    assert result["mean_pairwise_exact_agreement"] is None
    assert result["reason"] == "need at least 1 run rated by at least 2 people; have 0"


def test_inter_rater_agreement_one_shared_run():
    result = inter_rater_agreement({"r1": {"ann": 3, "bob": 3}, "r2": {"bob": 4}})

    assert result["n_units"] == 1
    assert result["mean_pairwise_exact_agreement"] == 1.0
    assert result["alpha"] is None
    assert result["reason"] == "need at least 2 runs rated by at least 2 raters each; have 1"


# --- calibration buckets, distribution, groups -------------------------------------------


def test_calibration_buckets_by_hand():
    # [0, 2): judge 1.0, 1.5 -> human 1, 2: mean 1.5, s/sqrt(2) = 0.5, expected 1 + 1*0.4 = 1.4.
    # [2, 4): judge 3.0 -> human 2: one run, no interval, expected 2.2, gap -0.2.
    # [4, 6) and [6, 8): empty.
    # [8, 10]: judge 8.0, 9.0, 10.0 -> human 5, 5, 4: mean 14/3, s/sqrt(3) = 1/3, expected 4.6.
    buckets = calibration_buckets([1.0, 1.5, 3.0, 9.0, 10.0, 8.0], [1, 2, 2, 5, 4, 5])

    assert [b["bucket"] for b in buckets] == ["[0, 2)", "[2, 4)", "[4, 6)", "[6, 8)", "[8, 10]"]
    assert [b["n"] for b in buckets] == [2, 1, 0, 0, 3]
    assert [b["expected_human"] for b in buckets] == pytest.approx([1.4, 2.2, 3.0, 3.8, 4.6])

    first = buckets[0]
    assert first["judge_low"] == 0.0
    assert first["judge_high"] == 2.0
    assert first["human_mean"] == pytest.approx(1.5)
    assert first["human_ci_low"] == pytest.approx(1.5 - T_975_DF1 * 0.5)
    assert first["human_ci_high"] == pytest.approx(1.5 + T_975_DF1 * 0.5)
    assert first["gap"] == pytest.approx(0.1)

    single = buckets[1]
    assert single["human_mean"] == 2.0
    assert single["human_ci_low"] is None
    assert single["gap"] == pytest.approx(-0.2)
    assert single["reason"] == "need at least 2 rated runs in this bucket; have 1"

    empty = buckets[2]
    assert empty["human_mean"] is None
    assert empty["gap"] is None
    assert empty["human_ci_high"] is None

    last = buckets[4]
    assert last["human_mean"] == pytest.approx(14 / 3)
    assert last["human_ci_low"] == pytest.approx(14 / 3 - T_975_DF2 / 3)
    assert last["gap"] == pytest.approx(14 / 3 - 4.6)
    assert_plain_json_types(buckets)


def test_calibration_buckets_edges():
    # Each bucket contains its lower edge; 10 falls in the last bucket.
    buckets = calibration_buckets([0, 2, 4, 6, 8, 10, 1.999], [1, 2, 3, 4, 5, 5, 1])

    assert [b["n"] for b in buckets] == [2, 1, 1, 1, 2]


def test_calibration_buckets_empty_input():
    buckets = calibration_buckets([], [])

    assert len(buckets) == 5
    assert all(b["n"] == 0 and b["human_mean"] is None for b in buckets)


def test_rating_distribution_counts():
    assert rating_distribution([5, 4, 4, 1, 5, 5]) == {"1": 1, "2": 0, "3": 0, "4": 2, "5": 3}
    assert rating_distribution([]) == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}


@pytest.mark.parametrize("rating", [0, 6, 3.5, True, "4"])
def test_rating_distribution_rejects_invalid_rating(rating):
    with pytest.raises(ValueError, match="whole number from 1 to 5"):
        rating_distribution([3, rating])


def test_mean_by_group_values():
    rows = [("mistral-small", 4), ("mistral-large", 5), ("mistral-small", 2), ("mistral-small", 3)]

    result = mean_by_group(rows)

    assert list(result) == ["mistral-large", "mistral-small"]
    assert result["mistral-large"] == {"n": 1, "mean": 5.0, "std_dev": None}
    assert result["mistral-small"]["n"] == 3
    assert result["mistral-small"]["mean"] == pytest.approx(3.0)
    assert result["mistral-small"]["std_dev"] == pytest.approx(1.0)  # sqrt((1 + 1 + 0) / 2)
    assert_plain_json_types(result)


def test_mean_by_group_rejects_non_finite():
    with pytest.raises(ValueError, match="value for group 'm'"):
        mean_by_group([("m", math.nan)])


# --- pairwise agreement ----------------------------------------------------------------------

# Every case: a consistent correct verdict, a flip that follows position (a then b),
# a consistent wrong verdict, a tie everywhere, a verdict correct only when swapped,
# and a human tie against a consistent judge preference.
SIX_PAIRS = [
    PairRecord("p1", human="a", judge_original="a", judge_swapped="a"),
    PairRecord("p2", human="b", judge_original="a", judge_swapped="b"),
    PairRecord("p3", human="a", judge_original="b", judge_swapped="b"),
    PairRecord("p4", human="tie", judge_original="tie", judge_swapped="tie"),
    PairRecord("p5", human="b", judge_original="tie", judge_swapped="b"),
    PairRecord("p6", human="tie", judge_original="a", judge_swapped="a"),
]


def test_pairwise_agreement_six_pairs_by_hand():
    result = pairwise_agreement(SIX_PAIRS)

    assert result["n"] == 6
    assert result["n_excluded"] == 0
    # Original order matches the human on p1, p4.
    assert result["original_order"] == {
        "n": 6,
        "count": 2,
        "rate": pytest.approx(2 / 6),
        "reason": None,
    }
    # Swapped order matches on p1, p2, p4, p5.
    assert result["swapped_order"] == {
        "n": 6,
        "count": 4,
        "rate": pytest.approx(4 / 6),
        "reason": None,
    }
    # (2 + 4) correct verdicts out of 12.
    assert result["average"] == {"n": 6, "count": 6, "rate": pytest.approx(0.5), "reason": None}
    # Both orders correct: p1, p4.
    assert result["both_orders_correct"]["count"] == 2
    # Same verdict in both orders: p1, p3, p4, p6.
    assert result["position_consistency"]["count"] == 4
    assert result["position_consistency"]["rate"] == pytest.approx(4 / 6)
    # Combined verdicts a, tie, b, tie, tie, a; equal to the human on p1 and p4.
    assert result["with_ties"] == {"n": 6, "count": 2, "rate": pytest.approx(2 / 6), "reason": None}
    # Non-tie human and non-tie combined: p1 (a, a) and p3 (a, b).
    assert result["without_ties"] == {
        "n": 2,
        "count": 1,
        "rate": pytest.approx(0.5),
        "reason": None,
    }
    # Non-tie verdicts: original a,a,b,a (first shown a wins 3 of 4) and swapped a,b,b,b,a
    # (first shown b wins 3 of 5), so 6 of 9.
    assert result["first_shown_win_rate"] == {
        "n": 9,
        "count": 6,
        "rate": pytest.approx(2 / 3),
        "reason": None,
    }


def test_pairwise_agreement_six_pairs_kappa_by_hand():
    # human a,b,a,tie,b,tie; original a,a,b,tie,tie,a; swapped a,b,b,tie,b,a.
    # Original: p_o = 2/6, marginals human (2,2,2) and judge (3,1,2),
    #   p_e = (2*3 + 2*1 + 2*2) / 36 = 1/3, kappa = (1/3 - 1/3) / (2/3) = 0.
    # Swapped: p_o = 4/6, judge marginals (2,3,1), p_e = (4 + 6 + 2) / 36 = 1/3,
    #   kappa = (2/3 - 1/3) / (2/3) = 0.5.
    # Between orders: p_o = 4/6, marginals (3,1,2) and (2,3,1), p_e = (6 + 3 + 2) / 36 = 11/36,
    #   kappa = (24/36 - 11/36) / (25/36) = 13/25.
    kappa = pairwise_agreement(SIX_PAIRS)["cohen_kappa"]

    assert kappa["original"]["kappa"] == pytest.approx(0.0)
    assert kappa["swapped"]["kappa"] == pytest.approx(0.5)
    assert kappa["average"]["kappa"] == pytest.approx(0.25)
    assert kappa["between_orders"]["kappa"] == pytest.approx(13 / 25)
    assert kappa["original"]["n"] == 6

    human = [r.human for r in SIX_PAIRS]
    swapped = [r.judge_swapped for r in SIX_PAIRS]
    assert kappa["swapped"]["kappa"] == pytest.approx(cohen_kappa_score(human, swapped))


def test_pairwise_agreement_excludes_incomplete_pairs():
    records = SIX_PAIRS + [
        PairRecord("p7", human="a", judge_original="a", judge_swapped=None),
        PairRecord("p8", human="b", judge_original=None, judge_swapped=None),
    ]

    result = pairwise_agreement(records)

    assert result["n"] == 6
    assert result["n_excluded"] == 2
    assert result["original_order"]["count"] == 2


def test_pairwise_agreement_empty():
    result = pairwise_agreement([])

    assert result["n"] == 0
    assert result["original_order"]["rate"] is None
    assert (
        result["original_order"]["reason"] == "need at least 1 pair judged in both orders; have 0"
    )
    assert result["average"]["rate"] is None
    assert result["without_ties"]["rate"] is None
    assert result["first_shown_win_rate"]["reason"] == "need at least 1 non-tie verdict; have 0"
    assert result["cohen_kappa"]["original"]["kappa"] is None
    assert result["cohen_kappa"]["average"]["kappa"] is None
    assert (
        result["cohen_kappa"]["original"]["reason"]
        == "need at least 2 pairs judged in both orders; have 0"
    )


def test_pairwise_agreement_one_pair():
    result = pairwise_agreement(
        [PairRecord("p1", human="a", judge_original="a", judge_swapped="b")]
    )

    assert result["original_order"]["rate"] == 1.0
    assert result["position_consistency"]["rate"] == 0.0
    # The combined verdict is a tie, so no pair counts without ties.
    assert result["without_ties"]["n"] == 0
    assert result["without_ties"]["rate"] is None
    assert (
        result["cohen_kappa"]["original"]["reason"]
        == "need at least 2 pairs judged in both orders; have 1"
    )


def test_pairwise_agreement_single_verdict_kappa_undefined():
    records = [
        PairRecord(f"p{i}", human="a", judge_original="a", judge_swapped="a") for i in range(3)
    ]

    result = pairwise_agreement(records)

    assert result["original_order"]["rate"] == 1.0
    assert result["cohen_kappa"]["original"]["kappa"] is None
    assert (
        result["cohen_kappa"]["original"]["reason"]
        == "people and the judge used only one verdict ('a')"
    )
    assert (
        result["cohen_kappa"]["between_orders"]["reason"]
        == "both orders used only one verdict ('a')"
    )
    assert result["cohen_kappa"]["average"]["kappa"] is None


def test_pairwise_agreement_rejects_unknown_verdict():
    with pytest.raises(ValueError, match="pair 'p9': judge_swapped must be"):
        pairwise_agreement([PairRecord("p9", human="a", judge_original="a", judge_swapped="B")])
    with pytest.raises(ValueError, match="pair 'p9': human must be"):
        pairwise_agreement([PairRecord("p9", human=None, judge_original="a", judge_swapped="a")])


def test_combined_verdict_flip_is_tie():
    assert combined_verdict("a", "a") == "a"
    assert combined_verdict("a", "b") == "tie"
    assert combined_verdict("tie", "b") == "tie"


def test_min_n_values():
    assert MIN_N == {"correlation": 3, "kappa": 2, "offset": 2, "alpha": 2, "pairwise": 1}
