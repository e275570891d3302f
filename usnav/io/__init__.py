"""File formats: PLUS sequence files (``.igs.mha``, ``.seq.nrrd``) and volumes (NIfTI, NRRD)."""
