"""The package's version, declared here only: ``setup.py`` reads this line without importing the
package, ``keras_unet3plus.__version__`` and ``unet3plus --version`` import it (no TensorFlow)."""

__version__ = "0.1.0"
