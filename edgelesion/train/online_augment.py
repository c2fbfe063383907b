"""Augmentation inside the training input pipeline, drawn fresh every epoch from (seed, epoch, image index).

Every random draw is a stateless TensorFlow op keyed on those three numbers, so an image gets the
same augmentation in a resumed run as in an uninterrupted one, whatever order or batch it lands in.
Dermoscopy has no "up": flips in both axes and 90-degree rotations are all label-preserving.
"""

from __future__ import annotations

from edgelesion._tf import tf
from edgelesion.train.config import OnlineAugment


def _augment_one(image: tf.Tensor, seed: tf.Tensor, config: OnlineAugment) -> tf.Tensor:
    """One float32 HxWx3 image (0-255), augmented by draws from the stateless `seed` (shape [2])."""
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    size = tf.shape(image)[0]
    if config.flips:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
        image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    if config.rotate90:
        turns = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=4, dtype=tf.int32)
        image = tf.image.rot90(image, turns)
    if config.min_crop < 1.0:
        share = tf.random.stateless_uniform([], seeds[3], minval=config.min_crop, maxval=1.0)
        side = tf.cast(tf.round(share * tf.cast(size, tf.float32)), tf.int32)
        image = tf.image.stateless_random_crop(image, tf.stack([side, side, 3]), seeds[4])
        image = tf.image.resize(image, tf.stack([size, size]), method="bilinear")
    unit = image / 255.0
    if config.brightness:
        unit = tf.image.stateless_random_brightness(unit, config.brightness, seeds[5])
    if config.contrast:
        unit = tf.image.stateless_random_contrast(unit, 1 - config.contrast, 1 + config.contrast, seeds[6])
    if config.saturation or config.hue:
        colour = tf.random.experimental.stateless_split(seeds[7], num=2)
        if config.saturation:
            unit = tf.image.stateless_random_saturation(unit, 1 - config.saturation, 1 + config.saturation, colour[0])
        if config.hue:
            unit = tf.image.stateless_random_hue(tf.clip_by_value(unit, 0.0, 1.0), config.hue, colour[1])
    unit = _vary_illumination(tf.clip_by_value(unit, 0.0, 1.0), seed, config)
    image = tf.clip_by_value(unit, 0.0, 1.0) * 255.0
    if config.pixel_noise:  # its own stream (folded in), so the draws above stay what they were without it
        noise_seed = tf.random.experimental.stateless_fold_in(seed, 8)
        noise = tf.random.stateless_normal(tf.shape(image), noise_seed, stddev=config.pixel_noise)
        image = tf.clip_by_value(image + noise, 0.0, 255.0)
    return image


def _vary_illumination(unit: tf.Tensor, seed: tf.Tensor, config: OnlineAugment) -> tf.Tensor:
    """Gamma, a colour cast, loss of colour and a dark frame on a 0-1 image, each from a stream of its own (folded
    in), so the draws before them stay what they were without them."""
    if config.gamma:
        u = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, 10), -config.gamma, config.gamma
        )
        unit = tf.pow(tf.maximum(unit, 1e-6), tf.exp(u))
    if config.white_balance:
        bound = config.white_balance
        gains = tf.random.stateless_uniform(
            [3], tf.random.experimental.stateless_fold_in(seed, 11), 1 - bound, 1 + bound
        )
        unit = unit * gains
    if config.grayscale:
        draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 12))
        unit = tf.cond(
            draw < config.grayscale, lambda: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(unit)), lambda: unit
        )
    if config.frame:
        unit = _random_frame(unit, tf.random.experimental.stateless_fold_in(seed, 13), config.frame)
    return unit


def _random_frame(unit: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """With `probability`, the image outside a circle darkened to black (a soft edge of 0.05 half-sides), as a
    dermoscope's frame: radius 0.8-1.2 half-sides (corners only, up to the middle of the edges), centre moved by up
    to 0.1 half-sides."""
    draws = tf.random.stateless_uniform([4], seed)
    size = tf.cast(tf.shape(unit)[0], tf.float32)
    axis = (tf.range(size) + 0.5) / (size / 2) - 1.0  # -1..1 across the image
    centre = (draws[1:3] - 0.5) * 0.2
    distance = tf.sqrt((axis[:, None] - centre[0]) ** 2 + (axis[None, :] - centre[1]) ** 2)
    radius = 0.8 + 0.4 * draws[3]
    mask = tf.clip_by_value((radius - distance) / 0.05, 0.0, 1.0)[..., None]
    return tf.cond(draws[0] < probability, lambda: unit * mask, lambda: unit)


def augment_batch(images: tf.Tensor, indices: tf.Tensor, seed: int, config: OnlineAugment) -> tf.Tensor:
    """A batch of uint8 images, augmented image by image from (seed, image index); float32 0-255 out."""
    images = tf.cast(images, tf.float32)
    if not config.enabled:
        return images
    seeds = tf.stack(
        [tf.fill(tf.shape(indices), tf.constant(seed % 2**31, tf.int64)), tf.cast(indices, tf.int64)], axis=1
    )
    return tf.map_fn(
        lambda pair: _augment_one(pair[0], pair[1], config), (images, seeds), fn_output_signature=tf.float32
    )


def mix_batch(
    images: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, indices: tf.Tensor, seed: int, alpha: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mixup (Zhang et al., 2018): each image, its one-hot target and its weight blended with the batch's next image
    (the last with the first) by a share drawn from Beta(alpha, alpha), folded to at least 1/2 so every blend is
    mostly its own image. The draws come from (seed, the batch's first image index), so a resumed run mixes alike."""
    batch_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed % 2**31, 9], tf.int64), tf.cast(indices[0], tf.int64)
    )
    gammas = tf.random.stateless_gamma(tf.stack([2, tf.shape(images)[0]]), batch_seed, alpha=alpha)
    share = gammas[0] / (gammas[0] + gammas[1])
    share = tf.maximum(share, 1.0 - share)

    def blend(own: tf.Tensor) -> tf.Tensor:
        mix = tf.reshape(share, [-1] + [1] * (own.shape.rank - 1))
        return mix * own + (1.0 - mix) * tf.roll(own, shift=-1, axis=0)

    return blend(images), blend(targets), blend(weights)
