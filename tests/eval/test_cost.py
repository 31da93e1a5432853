import torch
import torch.nn as nn

from licq.api import QuantConfig, quantize_
from licq.eval.cost import CostMeter


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.conv(x))


def test_macs_bitops_and_weight_bits_by_hand():
    m = Tiny()
    x = torch.rand(1, 3, 8, 8)
    with CostMeter(m) as meter:
        m(x)
    conv = 4 * 4 * 4 * 3 * 3 * 3  # output elements (4×4×4) × C_in × k × k
    up = 4 * 4 * 4 * 2 * 4 * 4  # input elements (4×4×4) × C_out × k × k
    assert meter.macs == conv + up
    assert meter.bitops == (conv + up) * 32 * 32
    assert meter.weight_bits == (4 * 3 * 9 + 4 * 2 * 16) * 32
    quantize_(m, QuantConfig(layers={"conv": None}, default=QuantConfig.uniform(4, 6).default))
    with torch.no_grad():
        m.up.input_quant.calibrated.fill_(True)
    with CostMeter(m) as meter:
        m(x)
    assert meter.bitops == conv * 32 * 32 + up * 4 * 6
    assert meter.weight_bits == 4 * 3 * 9 * 32 + 4 * 2 * 16 * 4
    assert meter.per_layer["up"]["w_bits"] == 4 and meter.per_layer["up"]["a_bits"] == 6


def test_autoregressive_context_conv_is_counted_per_latent_position():
    # licq's coding loops apply the quantized context conv per latent position as a functional
    # conv (no hook sees it); the meter must still count each call with its full masked kernel.
    from tests.conftest import tiny_model

    m = tiny_model("cheng2020-anchor")
    quantize_(m, QuantConfig.uniform(6, 8))
    for mod in m.modules():
        if "input_quant" in mod._modules:
            mod.input_quant.calibrated.fill_(True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), CostMeter(m) as enc:
        out = m.compress(x)
    cp = m.context_prediction
    positions = out["shape"][0] * out["shape"][1] * 4 * 4  # z grid × 4 × 4 latent positions
    c_out, c_in, kh, kw = cp.weight.shape
    assert enc.per_layer["context_prediction"]["macs"] == positions * c_out * c_in * kh * kw
    assert enc.per_layer["context_prediction"]["w_bits"] == 6
    with torch.no_grad(), CostMeter(m) as dec:
        m.decompress(out["strings"], out["shape"])
    assert dec.per_layer["context_prediction"]["macs"] == positions * c_out * c_in * kh * kw
    # the meter detaches: a call after the block counts nothing
    with torch.no_grad():
        m.compress(x)
    assert enc.per_layer["context_prediction"]["macs"] == positions * c_out * c_in * kh * kw
