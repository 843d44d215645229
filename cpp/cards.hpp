// FITS header card images of floating-point values, many at once (mosaicfit.io.fits.float_cards
// is its Python face). The mosaic writes ~500 such cards per CCD (the TAN-SIP and fcr
// coefficients); formatted one by one in Python (repr, f-strings) that was ~0.4 ms per CCD.
//
// A card is the key left-justified to 8 columns, "= ", the value right-justified to 20
// columns, blanks to 80: byte for byte what mosaicfit.io.fits.card_image makes. The value is
// Python's repr(x).upper(): the shortest digits that read back to x exactly (std::to_chars),
// in fixed notation for decimal exponents -4..15, else d.dddE+XX (two exponent digits at
// least), a fixed-notation integer value with ".0".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mosaicfit {

// The value field of one card (the repr described above); x must be finite.
std::string float_repr(double x);

// The concatenated 80-character card images of keys[i] = values[i]. Keys must be 1-8 ASCII
// characters; values finite (else std::invalid_argument naming the key).
std::string float_card_images(const std::vector<std::string>& keys, const double* values);

}  // namespace mosaicfit
