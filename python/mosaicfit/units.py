"""Unit constants, defined once for the whole package.

Names say what a quantity in the first unit is in the second: ``x_arcsec * ARCSEC_RAD`` is in
radians, ``x_rad * RAD_MAS`` in milliarcseconds.
"""
import math

#: radians in one arcsecond
ARCSEC_RAD = math.pi / 648000.0
#: radians in one milliarcsecond
MAS_RAD = ARCSEC_RAD / 1000.0
#: milliarcseconds in one radian
RAD_MAS = 1.0 / MAS_RAD
#: milliarcseconds in one degree
DEG_MAS = 3.6e6
#: days in a Julian year (proper motions are per Julian year)
DAYS_PER_YEAR = 365.25
#: the AB magnitude of a flux of 1 nJy: m_AB = -2.5 log10(f / nJy) + AB_NJY_ZEROPOINT
AB_NJY_ZEROPOINT = 31.4
#: nJy in one Jy
NJY_PER_JY = 1e9
#: the AB zero point in Jy (a flux of 1 maggie)
JY_AB = 3631.0
