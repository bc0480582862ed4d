import pytest

from lvcodec.demo import demo_clip

from .helpers import write_y4m


@pytest.fixture(scope="session")
def clip_pics():
    return demo_clip(8, 96, 64)


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory, clip_pics):
    return write_y4m(tmp_path_factory.mktemp("clip") / "clip.y4m", clip_pics)
