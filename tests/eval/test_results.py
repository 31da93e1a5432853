import json

import pytest

from licq.eval import make_results, read_results, validate_results, write_results
from licq.eval.results import RESULT_KEYS, ResultsFormatError

POINTS = [
    {"psnr-rgb": 27.0 + i, "ms-ssim-rgb": 0.9 + 0.01 * i, "bpp": 0.1 * (i + 1),
     "encoding_time": 0.1, "decoding_time": 0.2, "bpp_estimate": 0.1 * (i + 1) - 0.001}
    for i in range(4)
]


def test_schema_is_compressai_eval_model(tmp_path):
    obj = make_results("m", POINTS, description="d", licq={"arch": "a"})
    assert list(obj["results"])[:5] == list(RESULT_KEYS)
    assert obj["results"]["bpp"] == [0.1, 0.2, 0.30000000000000004, 0.4]
    assert obj["results"]["bpp_estimate"][0] == pytest.approx(0.099)
    prov = obj["licq"]["provenance"]
    assert {"command", "commit", "date", "machine"} <= set(prov)
    path = tmp_path / "r.json"
    write_results(obj, path)
    assert read_results(path)["results"] == obj["results"]
    # CompressAI's own plotting tool reads the file
    from compressai.utils.plot.__main__ import parse_json_file

    parsed = parse_json_file(path, "psnr")
    assert parsed["name"] == "m" and parsed["xs"] == obj["results"]["bpp"]


@pytest.mark.parametrize("bad, msg", [
    ([], "top level"),
    ({"results": {"bpp": [1]}}, "missing 'name'"),
    ({"name": "x", "results": {"psnr-rgb": [1]}}, "'bpp' list"),
    ({"name": "x", "results": {"bpp": [1, 2], "psnr-rgb": [1]}}, "differ in length"),
    ({"name": "x", "results": {"bpp": ["a"]}}, "list of numbers"),
    ({"name": "x", "results": {"bpp": []}}, "empty"),
])
def test_invalid_results_are_rejected(bad, msg):
    with pytest.raises(ResultsFormatError, match=msg):
        validate_results(bad)


def test_read_errors(tmp_path):
    with pytest.raises(ResultsFormatError, match="not found"):
        read_results(tmp_path / "none.json")
    p = tmp_path / "bad.json"
    p.write_text("{nope")
    with pytest.raises(ResultsFormatError, match="not JSON"):
        read_results(p)
    p.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ResultsFormatError, match="missing 'results'"):
        read_results(p)


def test_isa_flags_reads_cpuinfo_and_lscpu_text():
    from licq._provenance import isa_flags, machine

    cpuinfo = "processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
    assert isa_flags(cpuinfo) == ["avx2", "avx512f", "avx512_vnni"]
    lscpu = "Model name: X\nFlags: fpu avx2 avx_vnni amx_int8 avx512_vnni_extra\n"
    assert isa_flags(lscpu) == ["avx2", "avx_vnni", "amx_int8"]  # whole words only
    assert isinstance(machine()["cpu_flags"], list)
