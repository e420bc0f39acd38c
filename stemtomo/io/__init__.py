"""File I/O: MRC/TIFF stacks and volumes, angle files, extended headers, ``.mdoc``, YAML sidecars, model files.

All writers are atomic (temporary file + rename) and refuse to overwrite without ``overwrite=True``.
"""

from stemtomo.io.angles import find_angle_file, format_angles, read_angle_file
from stemtomo.io.exthdr import parse_extended_header
from stemtomo.io.mdoc import find_mdoc, read_mdoc, read_mdoc_metadata
from stemtomo.io.modelfile import load_model, save_model
from stemtomo.io.mrc import read_mrc, write_mrc
from stemtomo.io.safety import (
    AtomicOutputs,
    atomic_file,
    check_output,
    check_output_dir,
    check_outputs,
    write_text_atomic,
)
from stemtomo.io.sidecar import Metadata, make_provenance, read_sidecar, sidecar_path
from stemtomo.io.stack import (
    Image,
    check_angle_count,
    read_array,
    read_stack,
    read_volume,
    resolve_stack_metadata,
    write_image,
)
from stemtomo.io.tiff import read_tiff, write_tiff

__all__ = [
    "AtomicOutputs",
    "Image",
    "Metadata",
    "atomic_file",
    "check_angle_count",
    "check_output",
    "check_output_dir",
    "check_outputs",
    "find_angle_file",
    "find_mdoc",
    "format_angles",
    "load_model",
    "make_provenance",
    "parse_extended_header",
    "read_angle_file",
    "read_array",
    "read_mdoc",
    "read_mdoc_metadata",
    "read_mrc",
    "read_sidecar",
    "read_stack",
    "read_tiff",
    "read_volume",
    "resolve_stack_metadata",
    "save_model",
    "sidecar_path",
    "write_image",
    "write_mrc",
    "write_text_atomic",
    "write_tiff",
]
