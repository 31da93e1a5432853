"""Build the embedded default quantized codec that `licq compress` uses without -m.

    python benchmarks/make_packed_defaults.py

For each quality of the embedded FP32 default (licq's ScaleHyperprior baseline): uniform W8A8 PTQ
calibrated on the bundled training crops (32 crops, seed 0, 1 thread), exported as a packed model
to src/licq/assets/packed/bmshj2018-hyperprior-N64M96-q<q>-w8a8.safetensors. Shipped (not rebuilt
at run time) so that every machine has the same model bytes and therefore the same model id.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402

from licq._provenance import provenance, sha256_file  # noqa: E402
from licq.api import QuantConfig  # noqa: E402
from licq.codec.api import PACKED_DIR  # noqa: E402
from licq.defaults import DEFAULT_ARCH, default_calibration_dir, default_checkpoints  # noqa: E402
from licq.export import export_packed  # noqa: E402
from licq.models import get_adapter, load_model  # noqa: E402
from licq.models.loading import infer_args  # noqa: E402
from licq.ptq import post_training_quantize  # noqa: E402
from licq.search.sensitivity import model_hash  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    prov = provenance()
    config = QuantConfig.uniform(8, 8)
    for q, ckpt in sorted(default_checkpoints().items()):
        model = load_model(DEFAULT_ARCH, checkpoint=ckpt)
        fp32 = model_hash(model)
        sizes = infer_args(get_adapter(DEFAULT_ARCH), model.state_dict())
        post_training_quantize(model, config, default_calibration_dir(), num_crops=32,
                               patch_size=256, seed=0, progress=False)
        dst = PACKED_DIR / f"{DEFAULT_ARCH}-N64M96-q{q}-w8a8.safetensors"
        n = export_packed(model.eval(), dst, arch=DEFAULT_ARCH, sizes=sizes, config=config,
                          quality=q, fp32_sha256=fp32,
                          extra={"source": f"PTQ w8a8 of licq:assets/models/{ckpt.name}",
                                 "fp32_file_sha256": sha256_file(ckpt),
                                 "provenance": {k: prov[k] for k in ("command", "commit", "date")}})
        print(f"q{q}: {dst.name} {n:,} bytes")


if __name__ == "__main__":
    main()
