"""DynaQuant dynamic per-image bit-widths (DBWS)."""

from licq.dynamic.selector import (
    BitSelector,
    DynamicLayer,
    DynamicSide,
    bits_loss,
    dynamic_sides,
    dynamic_summary,
    make_dynamic,
    quantize_selectors,
    selections,
    set_temperature,
    temperature,
)

__all__ = ["BitSelector", "DynamicLayer", "DynamicSide", "bits_loss", "dynamic_sides", "dynamic_summary",
           "make_dynamic", "quantize_selectors", "selections", "set_temperature", "temperature"]
