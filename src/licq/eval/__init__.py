"""Real-bitstream evaluation, results JSON, BD-rate and RD plots."""

from licq.eval.bdrate import bd_overlap, bd_psnr, bd_rate
from licq.eval.codec import evaluate, evaluate_image, mean_metrics
from licq.eval.plots import plot_bit_heatmap, plot_rd
from licq.eval.rd import RDPoint, evaluate_rd, format_table, state_bytes
from licq.eval.results import make_results, read_results, validate_results, write_results

__all__ = [
    "RDPoint",
    "evaluate_rd",
    "format_table",
    "state_bytes",
    "bd_overlap",
    "bd_psnr",
    "bd_rate",
    "evaluate",
    "evaluate_image",
    "make_results",
    "mean_metrics",
    "plot_bit_heatmap",
    "plot_rd",
    "read_results",
    "validate_results",
    "write_results",
]
