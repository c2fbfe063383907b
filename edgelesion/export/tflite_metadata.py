"""TFLite model metadata (the schema MediaPipe Tasks and Android's Task Library read): name, version, input
image spec, normalisation, and the labels as an associated file, so an app gets class names, not indices.

tflite-support cannot share TensorFlow 2.21's environment and mediapipe 1.2.3's metadata writer lacks its
native module (export/README.md), so the metadata flatbuffer is built here with `flatbuffers` and the
schema modules generated from metadata_schema.fbs and schema.fbs that mediapipe ships, as the schema
defines it: a `TFLITE_METADATA` entry in the model's metadata list pointing at a buffer that holds the
metadata (file identifier M001), and the associated files in a zip archive appended to the model file.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
from mediapipe.tasks.metadata import schema_py_generated as schema

from edgelesion import __version__
from edgelesion.export.bundle import ModelDescription

METADATA_NAME = b"TFLITE_METADATA"
LABELS_FILE = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"  # every field used here is in metadata schema 1.0.0


def _metadata_flatbuffer(model: ModelDescription) -> bytes:
    size = model.preprocessing.image_size
    image = meta.TensorMetadataT()
    image.name = "image"
    image.description = (
        f"RGB pixels 0-255: {model.preprocessing.crop_description} to {size}x{size} "
        f"({model.preprocessing.resize_method}); the model's own scaling is inside it"
    )
    image.content = meta.ContentT()
    image.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    image.content.contentProperties = meta.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    normalization = meta.ProcessUnitT()  # identity: a float input takes raw pixels (a uint8 one ignores this)
    normalization.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    normalization.options = meta.NormalizationOptionsT()
    normalization.options.mean, normalization.options.std = [0.0], [1.0]
    image.processUnits = [normalization]
    image.stats = meta.StatsT()
    image.stats.min, image.stats.max = [0.0], [255.0]

    labels = meta.AssociatedFileT()
    labels.name, labels.type = LABELS_FILE, meta.AssociatedFileType.TENSOR_AXIS_LABELS
    labels.description = "class names, one a line, in output order"
    probabilities = meta.TensorMetadataT()
    probabilities.name, probabilities.description = "probability", "softmax probability of each class"
    probabilities.content = meta.ContentT()
    probabilities.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    probabilities.content.contentProperties = meta.FeaturePropertiesT()
    probabilities.stats = meta.StatsT()
    probabilities.stats.min, probabilities.stats.max = [0.0], [1.0]
    probabilities.associatedFiles = [labels]

    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image], [probabilities]
    root = meta.ModelMetadataT()
    root.name = f"edgelesion {model.artifact}"
    root.description = (
        f"Skin-lesion classifier ({len(model.classes)} classes); not a medical device. Converted "
        f"from the Keras model with sha256 {model.source_model_sha256}."
    )
    root.version, root.author = __version__, "edgelesion"
    root.minParserVersion = MIN_PARSER_VERSION
    root.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(root.Pack(builder), b"M001")
    return bytes(builder.Output())


def with_metadata(tflite: bytes, model: ModelDescription) -> bytes:
    """The .tflite file `tflite` with `model`'s metadata and labels file added (any earlier metadata replaced)."""
    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAs(tflite, 0))
    buffer = schema.BufferT()
    buffer.data = list(_metadata_flatbuffer(model))
    flat.buffers = [*(flat.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(flat.buffers) - 1
    flat.metadata = [m for m in (flat.metadata or []) if m.name != METADATA_NAME] + [entry]
    builder = flatbuffers.Builder(len(tflite) + 4096)
    builder.Finish(flat.Pack(builder), b"TFL3")
    packed = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(packed, "a") as archive:  # the associated files ride in a zip appended to the model
        archive.writestr(LABELS_FILE, "\n".join(model.classes) + "\n")
    return packed.getvalue()
