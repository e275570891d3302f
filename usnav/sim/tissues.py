"""Tissue labels of the simulated spine and their acoustic and MRI (T2) properties.

The acoustic values follow ``docs/references.md`` §7 (IT'IS, Duck, Burger et al. 2013); where the
literature gives a range the middle is used, and where no source exists (tumor, the cord's
central echo) the tissue is modelled through its echogenicity. Units: speed of sound m/s,
density kg/m³, impedance MRayl, attenuation dB/cm/MHz. Backscatter is a dimensionless
amplitude relative to the other tissues (it sets the speckle level; 0 = anechoic).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Tissue(enum.IntEnum):
    """Labels of the anatomy volumes (``anatomy_preop.nii.gz``, ``anatomy_intraop.nii.gz``)."""

    AIR = 0
    SKIN = 1
    FAT = 2  # subcutaneous fat
    MUSCLE = 3  # paraspinal muscle and the other soft tissue of the trunk
    BONE = 4  # cortical bone
    MARROW = 5  # cancellous bone of the vertebral bodies
    DISC_ANNULUS = 6
    DISC_NUCLEUS = 7
    LIGAMENT = 8  # ligamentum flavum, posterior longitudinal ligament
    EPIDURAL_FAT = 9
    DURA = 10
    CSF = 11
    CORD = 12
    CENTRAL_ECHO = 13  # anterior median fissure / central canal: the cord's central echo
    TUMOR = 14  # solid intramedullary tumor
    CYST = 15  # tumor-associated cyst
    SALINE = 16  # irrigation fluid filling the laminectomy wound (intraoperative only)
    NERVE_ROOT = 17  # dorsal and ventral rootlets crossing the subarachnoid space


N_TISSUES = len(Tissue)

#: Labels of ``tumor_label.nii.gz``.
TUMOR_LABEL_SOLID = 1
TUMOR_LABEL_CYST = 2


@dataclass(frozen=True)
class AcousticProperties:
    """Acoustic parameters of one tissue.

    Attributes
    ----------
    speed_m_s, density_kg_m3
        Speed of sound and density; impedance Z = ρc.
    attenuation_db_cm_mhz
        α in dB/cm/MHz (attenuation in dB = α·f·d).
    backscatter
        Diffuse scattering amplitude (speckle brightness), relative; 0 = anechoic.
    scatterer_density
        Fraction of scatterer cells that hold a scatterer (1 = fully developed speckle, small =
        sparse bright dots).
    texture_sigma
        Strength of the slowly varying echogenicity (log-normal, over ~1-2 mm).
    roughness
        0 = mirror-like interface (echo only near normal incidence), 1 = diffuse (Lambertian).
    """

    speed_m_s: float
    density_kg_m3: float
    attenuation_db_cm_mhz: float
    backscatter: float
    scatterer_density: float = 1.0
    texture_sigma: float = 0.0
    roughness: float = 0.1

    @property
    def impedance_mrayl(self) -> float:
        return self.speed_m_s * self.density_kg_m3 / 1e6


#: Acoustic table (docs/references.md §7). Tumor backscatter is replaced per case
#: (hyper- or iso-echoic).
ACOUSTIC: dict[Tissue, AcousticProperties] = {
    Tissue.AIR: AcousticProperties(343.0, 1.2, 1.64, 0.0, roughness=1.0),
    Tissue.SKIN: AcousticProperties(1615.0, 1109.0, 1.0, 0.55, 1.0, 0.3, 0.3),
    Tissue.FAT: AcousticProperties(1450.0, 950.0, 0.63, 0.45, 0.35, 0.6, 0.2),
    Tissue.MUSCLE: AcousticProperties(1585.0, 1090.0, 1.0, 0.32, 1.0, 0.5, 0.2),
    Tissue.BONE: AcousticProperties(4080.0, 1908.0, 20.0, 0.9, 1.0, 0.3, 0.4),
    Tissue.MARROW: AcousticProperties(2500.0, 1400.0, 30.0, 0.9, 1.0, 0.3, 0.6),
    Tissue.DISC_ANNULUS: AcousticProperties(1580.0, 1100.0, 1.2, 0.45, 1.0, 0.3, 0.2),
    Tissue.DISC_NUCLEUS: AcousticProperties(1540.0, 1050.0, 0.6, 0.12, 1.0, 0.2, 0.1),
    Tissue.LIGAMENT: AcousticProperties(1700.0, 1150.0, 2.0, 0.7, 1.0, 0.3, 0.35),
    Tissue.EPIDURAL_FAT: AcousticProperties(1450.0, 950.0, 0.63, 0.22, 0.4, 0.5, 0.3),
    Tissue.DURA: AcousticProperties(1700.0, 1150.0, 2.0, 0.2, 1.0, 0.2, 0.15),
    Tissue.CSF: AcousticProperties(1504.5, 1007.0, 0.005, 0.0, roughness=0.1),
    Tissue.CORD: AcousticProperties(1540.0, 1075.0, 0.8, 0.11, 1.0, 0.3, 0.15),
    Tissue.CENTRAL_ECHO: AcousticProperties(1600.0, 1100.0, 1.0, 0.9, 1.0, 0.2, 0.6),
    Tissue.TUMOR: AcousticProperties(1550.0, 1060.0, 0.8, 0.14, 1.0, 0.5, 0.25),
    Tissue.CYST: AcousticProperties(1510.0, 1010.0, 0.01, 0.0, roughness=0.15),
    Tissue.SALINE: AcousticProperties(1520.0, 1005.0, 0.002, 0.0, roughness=0.1),
    Tissue.NERVE_ROOT: AcousticProperties(1600.0, 1100.0, 1.0, 0.6, 1.0, 0.2, 0.6),
}

#: Tumor backscatter for the two echogenicities the issue asks for (cord is 0.11).
TUMOR_BACKSCATTER = {"hyperechoic": 0.42, "isoechoic": 0.14}

#: T2-weighted MRI signal, relative (CSF = 1000): CSF and cyst very bright, tumor bright and
#: heterogeneous, cord intermediate, fat bright (fast spin echo), muscle and bone dark.
T2_SIGNAL: dict[Tissue, float] = {
    Tissue.AIR: 4.0,
    Tissue.SKIN: 300.0,
    Tissue.FAT: 720.0,
    Tissue.MUSCLE: 170.0,
    Tissue.BONE: 35.0,
    Tissue.MARROW: 430.0,
    Tissue.DISC_ANNULUS: 140.0,
    Tissue.DISC_NUCLEUS: 760.0,
    Tissue.LIGAMENT: 60.0,
    Tissue.EPIDURAL_FAT: 650.0,
    Tissue.DURA: 110.0,
    Tissue.CSF: 1000.0,
    Tissue.CORD: 330.0,
    Tissue.CENTRAL_ECHO: 345.0,
    Tissue.TUMOR: 600.0,
    Tissue.CYST: 940.0,
    Tissue.SALINE: 1000.0,
    Tissue.NERVE_ROOT: 300.0,
}

#: Heterogeneity of the T2 signal (relative SD of a smooth texture), per tissue.
T2_HETEROGENEITY: dict[Tissue, float] = {
    Tissue.TUMOR: 0.18,
    Tissue.MUSCLE: 0.06,
    Tissue.MARROW: 0.08,
    Tissue.FAT: 0.04,
}


@dataclass(frozen=True)
class AcousticTables:
    """Per-label arrays (index = label value) that the ray-marching kernel reads."""

    impedance: np.ndarray
    speed: np.ndarray
    attenuation: np.ndarray
    backscatter: np.ndarray
    density: np.ndarray
    texture_sigma: np.ndarray
    roughness: np.ndarray


def acoustic_tables(tumor_backscatter: float) -> AcousticTables:
    """The acoustic table as arrays, with the case's tumor backscatter."""
    rows = [ACOUSTIC[Tissue(i)] for i in range(N_TISSUES)]

    def col(f) -> np.ndarray:
        return np.array([f(r) for r in rows], dtype=np.float64)

    backscatter = col(lambda r: r.backscatter)
    backscatter[Tissue.TUMOR] = tumor_backscatter
    return AcousticTables(
        impedance=col(lambda r: r.impedance_mrayl),
        speed=col(lambda r: r.speed_m_s),
        attenuation=col(lambda r: r.attenuation_db_cm_mhz),
        backscatter=backscatter,
        density=col(lambda r: r.scatterer_density),
        texture_sigma=col(lambda r: r.texture_sigma),
        roughness=col(lambda r: r.roughness),
    )


def label_mask(*tissues: Tissue) -> int:
    """Bit mask (bit i = label i) of the given tissues, for the painting kernel."""
    mask = 0
    for t in tissues:
        mask |= 1 << int(t)
    return mask


ALL_LABELS = (1 << N_TISSUES) - 1
