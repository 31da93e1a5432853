import pytest

from licq.eval import plot_bit_heatmap


def _dynamic_results(n_a, n_s, candidates):
    pts = []
    for q in (1, 2):
        rows = [{"name": f"kodim{i:02d}.png",
                 "bits_g_a": [candidates[(i + j) % len(candidates)] for j in range(n_a)],
                 "bits_g_s": [candidates[(q + j) % len(candidates)] for j in range(n_s)]}
                for i in range(1, 4)]
        pts.append({"quality": q, "per_image": rows})
    return {"licq": {"points": pts}}


@pytest.mark.parametrize(("n_a", "n_s", "candidates"), [(3, 3, (6, 8, 10)), (13, 16, (4, 6, 8))])
def test_bit_heatmap_draws_each_panel_with_one_colour_per_candidate(
        tmp_path, monkeypatch, n_a, n_s, candidates):
    import matplotlib.pyplot as plt
    from PIL import Image

    seen = {}
    orig = plt.Figure.savefig

    def keep(fig, *a, **k):
        seen["axes"] = fig.axes
        return orig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    out = plot_bit_heatmap(_dynamic_results(n_a, n_s, candidates), tmp_path / "h.png", "t")
    assert Image.open(out).size[0] > 0
    panels, cbar = seen["axes"][:2], seen["axes"][-1]
    assert len(seen["axes"]) == 3  # two quality panels and the colour bar
    assert [t.get_text() for t in panels[0].get_xticklabels()][n_a - 1:n_a + 1] == [f"a{n_a}", "s1"]
    assert len(panels[1].get_xticklabels()) == n_a + n_s
    assert [float(t) for t in cbar.get_yticks()] == [float(c) for c in candidates]
