"""Overview figures, RGB overlays and plots, checked by content."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import tifffile
from scipy import stats as sps

from xrfproc import store
from xrfproc.core import imaging, plots
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import InputError
from xrfproc.steps import imaging as step_imaging
from xrfproc.steps import stats as step_stats


def stack(n=5, rows=12, cols=18, seed=0):
    rng = np.random.default_rng(seed)
    ims = rng.uniform(1, 2, size=(n, rows, cols))
    for k in range(n):  # a distinct brightest pixel per image
        ims[k, (3 * k) % rows, (5 * k + 2) % cols] = 50.0 + k
    return ims


def panel_array(ax):
    return np.asarray(ax.get_images()[0].get_array())


def test_overview_figure_panels_titles_colourbars_scalebar():
    ims = stack()
    names = [f"El{k} K" for k in range(5)]
    fig = imaging.overview_figure(ims, names, ncols=3, pix_size_um=2.5, scale_bar_um=10.0, title="test")
    axes = fig.panel_axes
    assert len(axes) == 5
    assert [a.get_title() for a in axes] == names
    # every panel has its own colour bar: 5 image axes + 5 colour bar axes
    assert len(fig.axes) == 10
    for k, ax in enumerate(axes):
        bars = [p for p in ax.patches if p.get_gid() == imaging.SCALEBAR_GID]
        assert len(bars) == 1 and bars[0].get_width() == pytest.approx(10.0 / 2.5)
        data = panel_array(ax)
        assert np.unravel_index(np.nanargmax(data), data.shape) == ((3 * k) % 12, (5 * k + 2) % 18)
    # panels do not overlap: the second panel starts right of the first one's colour bar
    assert fig.axes[1].get_position().x1 < axes[1].get_position().x0
    fig.canvas.draw()  # renders without error
    import matplotlib.pyplot as plt  # no pyplot figure was created
    assert plt.get_fignums() == []


def test_overview_orientation_scaling_and_clim():
    ims = stack(n=1)
    fig = imaging.overview_figure(ims, ["a"], rotate=90, fliph=True, log=True, clim=(0.0, 0.5))
    data = panel_array(fig.panel_axes[0])
    want = np.log10(ims[0])
    want = np.rot90(want)[:, ::-1]
    np.testing.assert_allclose(data, want)
    vmin, vmax = fig.panel_axes[0].get_images()[0].get_clim()
    assert vmax == pytest.approx(want.min() + 0.5 * (want.max() - want.min()))
    assert fig.panel_axes[0].get_title() == "a (log)"
    im = imaging.prepare_image(np.array([[0.0, -1.0], [4.0, 9.0]]), log_scale=True)
    assert np.isnan(im[0]).all() and im[1, 1] == pytest.approx(np.log10(9))
    with pytest.raises(InputError):
        imaging.overview_figure(ims, ["a", "b"])
    with pytest.raises(InputError):
        imaging.color_limits(ims[0], (0.8, 0.2))


def test_scale_bar_pixels_and_default_length():
    assert imaging.scale_bar_pixels(250, 15) == pytest.approx(250 / 15)
    assert imaging.nice_length(37.0) == 20.0 and imaging.nice_length(7.2) == 5.0 and imaging.nice_length(1.0) == 1.0
    fig = imaging.overview_figure(stack(n=1, cols=100), ["x"], pix_size_um=1.0)
    bar = [p for p in fig.panel_axes[0].patches if p.get_gid() == imaging.SCALEBAR_GID][0]
    assert bar.get_width() == 20.0  # a fifth of 100 um


@pytest.fixture()
def imfile(tmp_path):
    """A layout file whose two channels have different line counts (the original's bug)."""
    grid = (12, 18)
    raw = RawMap({c: RawChannel(np.ones(grid + (8,), np.int32), np.ones(grid), np.ones(grid)) for c in
                  ("channel00", "channel01")}, I0=np.ones(grid), acquisition_time=np.ones(grid),
                 mot1=np.zeros(grid), mot2=np.zeros(grid))
    path = tmp_path / "img.h5"
    store.write_raw(path, raw)
    with store.transaction(path, "normalise", replace=["norm"]) as tx:
        store.write_array(tx.group("norm"), "I0", 1.0)
        for c, n in (("channel00", 7), ("channel01", 2)):
            g = tx.file.create_group(f"norm/{c}")
            store.write_array(g, "ims", stack(n=n, seed=n))
            store.write_array(g, "names", [f"L{k}" for k in range(n)])
    return path


def test_overview_images_one_png_per_channel_with_own_count(imfile, monkeypatch):
    made = {}
    real = imaging.overview_figure

    def spy(images, names, **kw):
        fig = real(images, names, **kw)
        made[kw["title"]] = (len(fig.panel_axes), list(names))
        return fig

    monkeypatch.setattr(step_imaging.imaging, "overview_figure", spy)
    out = step_imaging.overview_images(imfile, "norm", ncols=4, pix_size_um=1.0, out=imfile.parent / "png")
    assert [p.name for p in out] == ["img_norm_channel00_overview.png", "img_norm_channel01_overview.png"]
    assert made["img.h5: norm/channel00"][0] == 7
    assert made["img.h5: norm/channel01"] == (2, ["L0", "L1"])
    a, b = (mpimg.imread(p) for p in out)
    assert a.ndim == 3 and a.shape[0] > b.shape[0]  # 2 rows of panels against 1
    assert a.shape[1] == pytest.approx(b.shape[1] * 4 / 2, rel=0.1)  # 4 columns against 2


def test_overview_images_tiff_kmeans_pca(imfile):
    files = step_imaging.overview_images(imfile, "norm/channel01", tiff=True, rotate=90)
    tifs = [p for p in files if p.suffix == ".tif"]
    assert len(tifs) == 2
    with store.open_read(imfile) as f:
        ims = f["norm/channel01/ims"][()]
    np.testing.assert_allclose(tifffile.imread(tifs[1]), np.rot90(ims[1]), rtol=1e-6)
    step_stats.kmeans(imfile, "norm", nclusters=3, channel="channel00")
    step_stats.pca(imfile, "norm", ncomponents=2, channel="channel00")
    for group in ("kmeans", "PCA"):
        (png,) = step_imaging.overview_images(imfile, group, log=True)
        assert png.name == f"img_{group}_channel00_log_overview.png" and mpimg.imread(png).shape[2] in (3, 4)


def test_rgb_image_follows_the_data():
    r, g, b = stack(n=3, seed=4)
    rgb = imaging.rgb_image(r, g, b, percentiles=(0, 100))
    assert rgb.shape == r.shape + (3,) and rgb.min() >= 0 and rgb.max() <= 1
    for k, im in enumerate((r, g, b)):
        assert np.argmax(rgb[..., k]) == np.argmax(im)
    fig = imaging.plot_rgb(r, g, b, ["Fe K", "Cu K", "Zn K"])
    fig.canvas.draw()
    assert len(fig.axes) == 1


def test_plot_correl_statistics_match_scipy(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    data = np.stack([x, 2 * x + rng.normal(scale=0.5, size=400), rng.normal(size=400)], axis=-1).reshape(20, 20, 3)
    data[0, 0, 1] = np.nan
    fig, res = plots.plot_correl(data, ["Fe", "Cu", "Zn"], save=tmp_path / "c.png")
    ok = np.isfinite(data[..., 1].ravel())
    # keys are (x, y): the upper-right panel (row Fe, column Cu) regresses Fe on Cu
    lr = sps.linregress(data[..., 1].ravel()[ok], data[..., 0].ravel()[ok])
    st = res[("Cu", "Fe")]
    assert st.r2 == pytest.approx(lr.rvalue**2, rel=1e-10)
    assert st.slope == pytest.approx(lr.slope, rel=1e-10)
    assert st.pearson_r == pytest.approx(sps.pearsonr(data[..., 0].ravel()[ok], data[..., 1].ravel()[ok])[0])
    assert st.stars == "***" and res[("Zn", "Fe")].stars in ("", "*", "**", "***")
    assert len(fig.axes) == 9
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert f"R² = {st.r2:.2f}" in texts and f"r = {st.pearson_r:.2f}***" in texts
    assert mpimg.imread(tmp_path / "c.png").shape[0] > 100


def test_plot_detlim_and_sumspec_open(tmp_path):
    dl = np.array([[5.0, 2.0, 1.0], [0.5, 0.2, 0.1]])
    fig = plots.plot_detlim(dl, ["Fe K", "Cu K", "Zn K"], tm=[1, 1000], dl_err=dl * 0.1, save=tmp_path / "dl.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["Fe K", "Cu K", "Zn K"]
    assert sorted(ax.get_legend_handles_labels()[1]) == ["1 s", "1000 s"]
    e = np.linspace(1, 20, 500)
    model = 10 + 1000 * np.exp(-((e - 6.4) ** 2) / 0.02)
    y = np.random.default_rng(0).poisson(model).astype(float)
    fig = plots.plot_sumspec(e, y, model, np.full_like(e, 10.0), {"Fe Ka": 6.4, "Fe Kb": 7.06},
                             save=tmp_path / "s.png")
    assert len(fig.axes) == 2
    assert {"Fe Ka", "Fe Kb"} <= {t.get_text() for t in fig.axes[0].texts}
    assert mpimg.imread(tmp_path / "s.png").shape[:2] == (750, 1350)


def test_correlation_plot_step(tmp_path):
    import xrfproc
    from xrfproc import store

    path = xrfproc.simulate(tmp_path / "c.h5", rows=6, cols=7, seed=2)
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 10, (6, 7))
    with store.transaction(path, "normalise", replace=["norm"]) as tx:
        g = tx.group("norm/channel00")
        store.write_array(g, "ims", np.stack([base, 2 * base + 1, rng.uniform(1, 2, (6, 7)), np.zeros((6, 7))]))
        store.write_array(g, "names", ["Fe K", "Zn K", "Sr K", "Sr L"])
    out = xrfproc.correlation_plot(path, "norm")
    assert out.exists() and out.stat().st_size > 10_000
    with pytest.raises(xrfproc.InputError, match="Pb not among the lines"):
        xrfproc.correlation_plot(path, "norm", elements=["Fe", "Pb"])
