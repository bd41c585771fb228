"""`miniai.plot`: how tensors are read (CHW or HWC), the axes arrays of `subplots`/`get_grid`, bad grids.
(`show_images` as a whole is tested in test_data.py.)"""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from miniai.plot import get_grid, show_image, subplots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')


@pytest.mark.parametrize('shape, shown', [
    ((3, 8, 8), (8, 8, 3)), ((1, 4, 4), (4, 4)), ((4, 28, 28), (28, 28, 4)), ((3, 8, 2), (8, 2, 3)),  # CHW
    ((2, 8, 3), (2, 8, 3)),  # HWC: 2 channels cannot be shown, 3 can
    ((28, 28, 3), (28, 28, 3)), ((4, 6, 3), (4, 6, 3)), ((8, 8), (8, 8)),     # HWC (4x6x3: more rows than channels)
])
def test_show_image_reads_a_tensor_as_chw_or_hwc(shape, shown):
    assert show_image(torch.rand(shape)).images[0].get_array().shape == shown


@pytest.mark.parametrize('nrows, ncols, shape', [(1, 1, (1,)), (1, 3, (3,)), (3, 1, (3,)), (2, 3, (2, 3))])
def test_subplots_gives_the_course_squeezed_axes_array(nrows, ncols, shape):
    _, axs = subplots(nrows, ncols)
    assert axs.shape == shape
    assert subplots(nrows, ncols, squeeze=False)[1].shape == (nrows, ncols)


@pytest.mark.parametrize('kw', [dict(nrows=0), dict(ncols=0), dict(nrows=-1), dict(ncols=2.5), dict(nrows=True)])
def test_get_grid_refuses_a_bad_number_of_rows_or_columns(kw):
    (k, v), = kw.items()
    with pytest.raises(ValueError, match=rf'get_grid: {k} must be a whole number >= 1 \(or None to fit n\), got'):
        get_grid(4, **kw)


def test_get_grid_too_small_says_so():
    with pytest.raises(ValueError, match='get_grid: a 1x2 grid cannot hold 4 images; give more rows or columns'):
        get_grid(4, nrows=1, ncols=2)
    fig, axs = get_grid(3)
    assert axs.shape == (3,) and all(ax.axison for ax in axs)
