"""Database models. Importing this package registers every table on Base.metadata."""

from models.base import Base
from models.datasets import Dataset
from models.jobs import Job
from models.judgements import Judgement, PairwiseJudgement
from models.ratings import PairwisePreference, Rating
from models.runs import Run
from models.schedules import Schedule

__all__ = [
    "Base",
    "Dataset",
    "Job",
    "Judgement",
    "PairwiseJudgement",
    "PairwisePreference",
    "Rating",
    "Run",
    "Schedule",
]
