"""Any image a user has becomes the right RGB input; bad files give a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edgelesion.images import UnreadableImage, read_image, small_image_warning, to_model_input
from edgelesion.preprocessing import Preprocessing

PRE = Preprocessing(image_size=16)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.new("L", (40, 30), 77).save(tmp_path / "g.png")
    out = to_model_input(read_image(tmp_path / "g.png").image, PRE)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out == 77).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    out = to_model_input(read_image(tmp_path / "c.jpg").image, PRE)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_rgba_transparent_pixels_show_on_white(tmp_path):
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(tmp_path / "a.png")
    out = to_model_input(read_image(tmp_path / "a.png").image, PRE)
    assert (out == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # white on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    upright = read_image(tmp_path / "r.jpg").image
    assert upright.size == (20, 40)
    array = np.asarray(upright)
    assert array[:20].mean() > 200 and array[20:].mean() < 50  # white ends up on top


def test_an_upright_rgb_photo_is_decoded_without_a_copy(tmp_path, monkeypatch):
    # a 4000x3000 photo is 48 MB of pixels (Pillow keeps RGB in 4 bytes): each needless copy costs as much as its whole decode
    Image.new("RGB", (64, 48), (1, 2, 3)).save(tmp_path / "p.jpg")

    def no_copy(*args, **kwargs):
        raise AssertionError("the decoded image was copied")

    monkeypatch.setattr(Image.Image, "copy", no_copy)
    monkeypatch.setattr(Image.Image, "convert", no_copy)
    image = read_image(tmp_path / "p.jpg").image
    assert image.mode == "RGB" and image.size == (64, 48)


def test_sixteen_bit_grayscale_keeps_its_contrast(tmp_path):
    array = np.zeros((20, 20), np.uint16)
    array[:, 10:] = 60000
    Image.fromarray(array).save(tmp_path / "16.png")
    out = np.asarray(read_image(tmp_path / "16.png").image)
    assert out[:, :10].max() < 5 and out[:, 10:].min() > 250


def test_an_image_whose_seen_part_is_under_half_the_input_side_is_warned_about():
    assert small_image_warning((180, 180), Preprocessing(image_size=224)) is None
    warning = small_image_warning((180, 180), Preprocessing(image_size=224, centre_crop=0.45))
    assert warning and "180x180 pixels (the model sees the centre 45% of each side)" in warning


def test_huge_image_is_resized_to_the_input_size(tmp_path):
    Image.new("RGB", (5000, 3000), (1, 2, 3)).save(tmp_path / "big.png")
    out = to_model_input(read_image(tmp_path / "big.png").image, PRE)
    assert out.shape == (16, 16, 3) and (out == [1, 2, 3]).all()


def test_a_centre_crop_resizes_only_the_centre_and_its_jpegs_keep_enough_pixels(tmp_path):
    framed = np.zeros((300, 400, 3), np.uint8)  # a dark frame around a bright centre, as a dermoscope's
    framed[60:240, 80:320] = 200  # the centre 60% of each side
    image = Image.fromarray(framed)
    whole = to_model_input(image, Preprocessing(image_size=32))
    centre = to_model_input(image, Preprocessing(image_size=32, centre_crop=0.4))
    assert whole.shape == centre.shape == (32, 32, 3)
    assert (centre == 200).all() and whole.min() == 0  # the centre 40% lies inside the bright box
    smooth = Image.fromarray(np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8))
    smooth.resize((1600, 1200), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=92)
    cropped, full = Preprocessing(image_size=64, centre_crop=0.5), Preprocessing(image_size=64)
    # the crop, not the image, keeps 3 input sides: decoded at 1/2 where the whole image may go to 1/4
    assert read_image(tmp_path / "big.jpg", cropped.draft_side).image.size == (800, 600)
    assert read_image(tmp_path / "big.jpg", full.draft_side).image.size == (400, 300)
    assert Preprocessing(image_size=224, centre_crop=0.7).draft_side == 960
    with pytest.raises(ValueError, match="centre_crop 0.1 must be between 0.2 and 1"):
        Preprocessing(centre_crop=0.1)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is not an image", "not a JPEG, PNG, BMP, GIF, TIFF or WebP image"),
        ("truncated", "corrupt or truncated"),
    ],
)
def test_bad_files_raise_with_reason(tmp_path, content, reason):
    if content == "truncated":
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, "JPEG")
        content = buffer.getvalue()[:300]
    (tmp_path / "bad.jpg").write_bytes(content)
    with pytest.raises(UnreadableImage, match=reason):
        read_image(tmp_path / "bad.jpg")


def test_content_hash_is_of_the_file_bytes(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    import hashlib

    assert read_image(tmp_path / "a.png").sha256 == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()


def test_a_large_jpeg_is_decoded_reduced_to_no_less_than_the_draft_side(tmp_path):
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize(
        (1600, 1200), Image.Resampling.BICUBIC
    )
    smooth.save(tmp_path / "big.jpg", quality=92)
    smooth.save(tmp_path / "big.png")
    small, whole = read_image(tmp_path / "big.jpg", draft_side=128), read_image(tmp_path / "big.jpg")
    reduced, full = small.image, whole.image
    assert full.size == (1600, 1200) and reduced.size == (200, 150)  # 1/8 scale: the most that keeps >= 128
    assert small.reduced and not whole.reduced
    unreduced = read_image(tmp_path / "big.jpg", draft_side=700)  # under 2 x 700 tall: whole
    assert unreduced.image.size == (1600, 1200) and not unreduced.reduced
    png = read_image(tmp_path / "big.png", draft_side=128)  # only JPEGs have a draft mode
    assert png.image.size == (1600, 1200) and not png.reduced
    pre = Preprocessing(image_size=64)
    difference = np.abs(to_model_input(reduced, pre).astype(int) - to_model_input(full, pre))
    assert (
        difference.mean() < 2
        and read_image(tmp_path / "big.jpg").sha256 == read_image(tmp_path / "big.jpg", 128).sha256
    )
