"""What the task YAMLs here name with ``!function utils.…``; lm-eval imports this file by path."""

from kava.evaluation.harness_tasks import load, process_results

__all__ = ["load", "process_results"]
