#include "cards.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace mosaicfit {

std::string float_repr(double x) {
    // shortest round-trip digits in scientific form, e.g. "-1.2345e-07"
    char sci[40];
    auto res = std::to_chars(sci, sci + sizeof sci, x, std::chars_format::scientific);
    std::string s(sci, res.ptr);
    bool neg = s[0] == '-';
    std::size_t e = s.find('e');
    std::string digits;
    for (std::size_t i = neg ? 1 : 0; i < e; ++i)
        if (s[i] != '.') digits.push_back(s[i]);
    int exp10 = std::stoi(s.substr(e + 1));
    std::string out = neg ? "-" : "";
    int nd = static_cast<int>(digits.size());
    if (exp10 < -4 || exp10 >= 16) {                 // as Python's repr: d.ddde+XX
        out += digits[0];
        if (nd > 1) out += "." + digits.substr(1);
        char ebuf[8];
        std::snprintf(ebuf, sizeof ebuf, "E%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
        out += ebuf;
    } else {
        int point = exp10 + 1;                       // digits before the decimal point
        if (point <= 0) {
            out += "0." + std::string(-point, '0') + digits;
        } else if (point >= nd) {
            out += digits + std::string(point - nd, '0') + ".0";
        } else {
            out += digits.substr(0, point) + "." + digits.substr(point);
        }
    }
    return out;
}

std::string float_card_images(const std::vector<std::string>& keys, const double* values) {
    std::string out(80 * keys.size(), ' ');
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const std::string& key = keys[i];
        if (key.empty() || key.size() > 8)
            throw std::invalid_argument("card key '" + key + "' is not 1-8 characters");
        if (!std::isfinite(values[i]))
            throw std::invalid_argument(key + " = " + std::to_string(values[i]) +
                                        " is not finite");
        std::string v = float_repr(values[i]);
        char* card = &out[80 * i];
        std::memcpy(card, key.data(), key.size());
        card[8] = '=';
        // the value right-justified in columns 11-30 (longer values run on to the right)
        std::size_t start = v.size() < 20 ? 10 + 20 - v.size() : 10;
        std::memcpy(card + start, v.data(), v.size());
    }
    return out;
}

}  // namespace mosaicfit
