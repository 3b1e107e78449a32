"""decaf's exception types: user mistakes are reported with the file, line, layer and blob."""


class DecafError(Exception):
    """Base class of every error decaf raises for bad input."""


class PrototxtError(DecafError):
    """A prototxt that does not parse: names the file, line, column and field."""

    def __init__(self, message, filename=None, line=None, column=None):
        self.filename, self.line, self.column = filename, line, column
        where = ""
        if filename is not None:
            where = str(filename)
            if line is not None:
                where += ":%d" % line
                if column is not None:
                    where += ":%d" % column
            where += ": "
        super().__init__(where + message)


class LayerSetupError(DecafError):
    """A layer given input it cannot accept (bottom count, shapes, parameters)."""


class ShapeMismatchError(DecafError):
    """Two blobs whose shapes must agree do not."""


class BlobProtoError(ShapeMismatchError, ValueError):
    """A BlobProto whose data does not fill its shape (or whose shape is negative)."""


class UnknownLayerTypeError(DecafError):
    """A layer type that no registered layer implements."""


class NetError(DecafError):
    """A net definition that cannot be built (missing bottom, bad sharing...)."""


class WeightsError(DecafError):
    """Weights that do not fit the net (shape mismatch, wrong blob count)."""


class TruncatedFileError(DecafError):
    """A binary protobuf file (.caffemodel, .solverstate, .binaryproto) that does not parse."""


class SolverError(DecafError):
    """A solver definition that cannot be used."""


class MissingFileError(DecafError, FileNotFoundError):
    """A file named in a model, solver or command line that does not exist."""


class OutOfMemoryError(DecafError, MemoryError):
    """Memory that would be taken beyond what is available (checked before allocating)."""


class DataSourceError(DecafError):
    """A data source (database, image list, HDF5 source, window file) that cannot be read."""


class SnapshotError(DecafError, OSError):
    """A snapshot that cannot be written (no space left, no permission); the previous one stays.
    ``errno`` and ``filename`` are those of the failed write."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class UntrustedCodeError(DecafError):
    """Code execution refused: Python layers are switched off (DECAF_NO_PYTHON_LAYERS)."""
