"""Benchmark generators: MQAR, MAD, needle-in-a-haystack, BABILong-style, formal languages, continual learning."""

from hope.tasks.babi import BabiStory, generate_story
from hope.tasks.babilong import BabiLongTask
from hope.tasks.base import IGNORE_INDEX, RowBuilder, Task, TaskBatch, score_predictions, stack_rows
from hope.tasks.continual import (
    IntentDataset, IntentEncoder, IntentExample, Stage, class_incremental_stages, continual_metrics, corpus_eras,
    load_intents, seen_class_accuracy,
)
from hope.tasks.formal_languages import LANGUAGES, FormalLanguageTask
from hope.tasks.mad import (
    CompressionTask, FuzzyInContextRecallTask, InContextRecallTask, MemorizationTask, SelectiveCopyingTask,
)
from hope.tasks.mqar import MQARTask
from hope.tasks.niah import NIAHTask
from hope.tasks.registry import TASKS, ClassIncrementalStream, DomainStream, TaskSpec, get_task, task_table

__all__ = [
    "IGNORE_INDEX", "LANGUAGES", "TASKS", "BabiLongTask", "BabiStory", "ClassIncrementalStream", "CompressionTask",
    "DomainStream", "FormalLanguageTask", "FuzzyInContextRecallTask", "InContextRecallTask", "IntentDataset",
    "IntentEncoder", "IntentExample", "MQARTask", "MemorizationTask", "NIAHTask", "RowBuilder", "SelectiveCopyingTask",
    "Stage", "Task", "TaskBatch", "TaskSpec", "class_incremental_stages", "continual_metrics", "corpus_eras",
    "generate_story", "get_task", "load_intents", "score_predictions", "seen_class_accuracy", "stack_rows", "task_table",
]
