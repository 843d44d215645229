// FITS header cards: the images of floating-point values, many at once
// (mosaicfit.io.fits.float_cards is its Python face), and the parsing of a header's card
// images (parse_cards; mosaicfit.io.fits.parse_header). The mosaic writes ~500 such cards per CCD (the TAN-SIP and fcr
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

// One parsed card: keyword, value and comment as mosaicfit.io.fits.parse_header gives them.
struct ParsedCard {
    enum Kind : char {
        Commentary = 'C',   // COMMENT, HISTORY, blank keyword: text = the card's columns 9-80
        String = 's',       // text (quotes undone, trailing blanks removed, CONTINUE joined)
        Bool = 'b',         // flag
        Int = 'i',          // text: the digits with their sign (any size)
        Float = 'f',        // x
        Complex = 'x',      // x, y
        Undefined = 'u',    // a keyword with "= " and no value
    };
    std::string key;
    Kind kind = Undefined;
    std::string text;
    bool flag = false;
    double x = 0.0, y = 0.0;
    std::string comment;
};

// The cards of `text` (80-character card images) up to the END card, whose index (the number
// of cards read, END included) goes to `n_cards`; false where a card is not standard FITS
// (FITS 4.0 section 4: fixed- and free-format values, CONTINUE long strings, HIERARCH
// keywords) or holds a byte outside printable ASCII, or no END card is found: the caller
// then lets astropy judge the header. Values are read exactly as Python would (floats
// correctly rounded, D exponents as E).
bool parse_cards(const char* text, std::size_t size, std::vector<ParsedCard>& cards,
                 std::size_t& n_cards);

}  // namespace mosaicfit
