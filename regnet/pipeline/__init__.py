"""File-to-file work of the command line: registration and application of saved transforms
on image files (:mod:`~regnet.pipeline.run`), transform lists in ANTs' order
(:mod:`~regnet.pipeline.transform_list`), point files (:mod:`~regnet.pipeline.points`),
output files and ``report.json`` (:mod:`~regnet.pipeline.outputs`), the overview figure
(:mod:`~regnet.pipeline.figures`) and atomic output folders (:mod:`~regnet.pipeline.outdir`).

The in-memory registration of two images is :func:`regnet.registration.register_images`
(re-exported here, with the other names this module has always offered). Names are imported
when first used, so that the command line can check its output folder
(:mod:`regnet.pipeline.outdir`, no torch) before the slow imports.

Example::

    >>> from regnet.pipeline import register_files
    >>> report = register_files("fixed.nii.gz", "moving.nii.gz", "affine+syn", "out/")
"""

from importlib import import_module

_LAZY = {
    "register_files": "regnet.pipeline.run",
    "apply_transform": "regnet.pipeline.run",
    "INTERPOLATIONS": "regnet.pipeline.run",
    "read_initial_transform": "regnet.pipeline.run",
    "apply_points": "regnet.pipeline.points",
    "map_points": "regnet.pipeline.points",
    "read_transforms": "regnet.pipeline.transform_list",
    "folder_list": "regnet.pipeline.transform_list",
    "TransformList": "regnet.pipeline.transform_list",
    "ArgumentError": "regnet.pipeline.transform_list",
    "write_outputs": "regnet.pipeline.outputs",
    "write_report": "regnet.pipeline.outputs",
    "warped_name": "regnet.pipeline.outputs",
    "save_warped": "regnet.pipeline.outputs",
    "save_overview": "regnet.pipeline.figures",
    "output_folder": "regnet.pipeline.outdir",
    "check_out_dir": "regnet.pipeline.outdir",
    "out_dir_problem": "regnet.pipeline.outdir",
    "OUTPUT_NAMES": "regnet.pipeline.outdir",
    "REPORT_NAME": "regnet.pipeline.outdir",
    "register_images": "regnet.registration.world",
    "Registration": "regnet.registration.world",
    "sample_moving": "regnet.registration.world",
    "total_ddf": "regnet.registration.world",
    "intensity_range": "regnet.registration.world",
    "normalise": "regnet.registration.world",
    "check_device": "regnet.registration.world",
    "TRANSFORMS": "regnet.registration.world",
    "PERCENTILES": "regnet.registration.world",
    "world_centre_of_mass": "regnet.registration.initialisation",
    "Config": "regnet.registration.config",
    "load_config": "regnet.registration.config",
    "ConfigError": "regnet._checks",
    "global_ncc": "regnet.metrics",
    "mse": "regnet.metrics",
    "SCORED_LABELS": "regnet.metrics",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'regnet.pipeline' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
