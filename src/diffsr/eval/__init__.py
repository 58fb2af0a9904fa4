"""Evaluation: metrics under pinned conventions, statistics, reports and cost benchmarks."""

from diffsr.eval.bench import benchmark_model, format_table, write_json
from diffsr.eval.evaluate import EvalItem, EvalOptions, Method, bicubic, evaluate
from diffsr.eval.metrics import (
    METRIC_INFO,
    Conventions,
    MetricSuite,
    prepare,
    psnr,
    rgb_to_y,
    sharpness_ratio,
    ssim_metric,
)
from diffsr.eval.report import write_report_md
from diffsr.eval.stats import bootstrap_ci, paired_difference, summarize

__all__ = [
    "METRIC_INFO",
    "Conventions",
    "EvalItem",
    "EvalOptions",
    "Method",
    "MetricSuite",
    "benchmark_model",
    "bicubic",
    "bootstrap_ci",
    "evaluate",
    "format_table",
    "paired_difference",
    "prepare",
    "psnr",
    "rgb_to_y",
    "sharpness_ratio",
    "ssim_metric",
    "summarize",
    "write_json",
    "write_report_md",
]
