"""edgelesion: train an honest skin-lesion classifier and take it to a phone.

Importing the package is light: TensorFlow is imported only by the modules that train.
"""

__version__ = "0.1.0"

from edgelesion.infer.inference import Classifier, FailedImage, Prediction

__all__ = ["Classifier", "FailedImage", "Prediction", "__version__"]
