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

// ---- parsing card images -------------------------------------------------------------------

namespace mosaicfit {
namespace {

// the blank of a card: parse_cards takes only cards of printable ASCII, where it is the one
// character the regular expressions' \s matched
inline bool ws(char c) { return c == ' '; }

inline bool digit(char c) { return c >= '0' && c <= '9'; }

std::string_view rstrip(std::string_view s) {
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return s;
}

std::string_view strip(std::string_view s) {
    s = rstrip(s);
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    return s;
}

// The end of a FITS number [+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)? starting at i, or npos.
std::size_t number_end(std::string_view s, std::size_t i) {
    std::size_t n = s.size(), j = i;
    if (j < n && (s[j] == '+' || s[j] == '-')) ++j;
    std::size_t d0 = j;
    while (j < n && digit(s[j])) ++j;
    if (j > d0) {
        if (j < n && s[j] == '.') {
            ++j;
            while (j < n && digit(s[j])) ++j;
        }
    } else {
        if (j >= n || s[j] != '.') return std::string_view::npos;
        ++j;
        std::size_t f0 = j;
        while (j < n && digit(s[j])) ++j;
        if (j == f0) return std::string_view::npos;
    }
    if (j < n && (s[j] == 'E' || s[j] == 'e' || s[j] == 'D' || s[j] == 'd')) {
        std::size_t k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) ++k;
        std::size_t e0 = k;
        while (k < n && digit(s[k])) ++k;
        if (k > e0) j = k;          // an exponent without digits is not part of the number
    }
    return j;
}

// The double of number text, as Python's float() of it with D exponents as E.
bool to_double(std::string_view s, bool lower_d, double& x) {
    std::string t(s);
    for (char& c : t) {
        if (c == 'D') c = 'E';
        else if (c == 'd') {
            if (!lower_d) return false;
            c = 'e';
        }
    }
    const char* b = t.data();
    const char* e = b + t.size();
    if (b < e && *b == '+') ++b;    // from_chars takes no '+'
    auto r = std::from_chars(b, e, x, std::chars_format::general);
    return r.ec == std::errc() && r.ptr == e;
}

// After a value: \s*(?:/(?P<comment>.*))?$
bool value_tail(std::string_view s, std::size_t j, std::string_view& comment, bool& has) {
    std::size_t n = s.size();
    while (j < n && ws(s[j])) ++j;
    has = false;
    if (j == n) return true;
    if (s[j] != '/') return false;
    comment = s.substr(j + 1);
    has = true;
    return true;
}

// A value field (what follows "= "): the grammar of mosaicfit.io.fits (its regex _VALUE).
bool parse_value(std::string_view s, ParsedCard& c, std::string_view& comment, bool& has) {
    std::size_t n = s.size(), i = 0;
    while (i < n && ws(s[i])) ++i;
    auto ends_value = [&](std::size_t j) { return j == n || ws(s[j]) || s[j] == '/'; };
    if (i < n && s[i] == '\'') {
        std::string v;
        std::size_t j = i + 1;
        for (;;) {
            if (j >= n) return false;
            if (s[j] == '\'') {
                if (j + 1 < n && s[j + 1] == '\'') {
                    v.push_back('\'');
                    j += 2;
                    continue;
                }
                break;
            }
            v.push_back(s[j++]);
        }
        c.kind = ParsedCard::String;
        c.text = std::string(rstrip(v));
        return value_tail(s, j + 1, comment, has);
    }
    if (i < n && (s[i] == 'T' || s[i] == 'F') && ends_value(i + 1)) {
        c.kind = ParsedCard::Bool;
        c.flag = s[i] == 'T';
        return value_tail(s, i + 1, comment, has);
    }
    if (i < n && (digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')) {
        std::size_t j = i;
        if (s[j] == '+' || s[j] == '-') ++j;
        std::size_t d0 = j;
        while (j < n && digit(s[j])) ++j;
        if (j > d0 && ends_value(j)) {
            c.kind = ParsedCard::Int;
            c.text = std::string(s.substr(i, j - i));
            return value_tail(s, j, comment, has);
        }
        j = number_end(s, i);
        if (j == std::string_view::npos || !ends_value(j)) return false;
        c.kind = ParsedCard::Float;
        if (!to_double(s.substr(i, j - i), true, c.x)) return false;
        return value_tail(s, j, comment, has);
    }
    if (i < n && s[i] == '(') {
        std::size_t j = i + 1;
        double xy[2];
        for (int part = 0; part < 2; ++part) {
            while (j < n && ws(s[j])) ++j;
            std::size_t e = number_end(s, j);
            // mosaicfit.io.fits reads a complex part's exponent D only upper-case
            if (e == std::string_view::npos || !to_double(s.substr(j, e - j), false, xy[part]))
                return false;
            j = e;
            while (j < n && ws(s[j])) ++j;
            if (j >= n || s[j] != (part == 0 ? ',' : ')')) return false;
            ++j;
        }
        c.kind = ParsedCard::Complex;
        c.x = xy[0];
        c.y = xy[1];
        return value_tail(s, j, comment, has);
    }
    c.kind = ParsedCard::Undefined;
    return value_tail(s, i, comment, has);
}

bool valid_keyword(std::string_view k) {
    for (char ch : k)
        if (!((ch >= 'A' && ch <= 'Z') || digit(ch) || ch == '_' || ch == '-')) return false;
    return true;
}

bool commentary(std::string_view k) { return k.empty() || k == "COMMENT" || k == "HISTORY"; }

}  // namespace

bool parse_cards(const char* text, std::size_t size, std::vector<ParsedCard>& cards,
                 std::size_t& n_cards) {
    std::string_view all(text, size);
    std::size_t n = size / 80, i = 0;
    cards.clear();
    // FITS headers are printable ASCII (FITS 4.0 section 4.1.1): a card with any other byte
    // (a control character, which Python's str.strip would take for blank but float() not)
    // is left to astropy; so the only blank below is ' '
    auto printable = [&](std::size_t k) {
        for (char ch : all.substr(80 * k, 80))
            if (ch < ' ' || ch > '~') return false;
        return true;
    };
    while (i < n) {
        if (!printable(i)) return false;
        std::string_view img = all.substr(80 * i, 80);
        ++i;
        std::string_view key = rstrip(img.substr(0, 8));
        if (key == "END") {
            n_cards = i;
            return true;
        }
        ParsedCard c;
        std::string_view comment;
        bool has = false;
        if (key == "HIERARCH") {
            std::string_view rest = img.substr(9);
            std::size_t eq = rest.find('=');
            if (eq == std::string_view::npos) return false;
            std::string name;                         // " ".join(name.split())
            std::string_view nm = rest.substr(0, eq);
            for (std::size_t a = 0; a < nm.size();) {
                while (a < nm.size() && ws(nm[a])) ++a;
                std::size_t b = a;
                while (b < nm.size() && !ws(nm[b])) ++b;
                if (b > a) {
                    if (!name.empty()) name.push_back(' ');
                    name.append(nm.substr(a, b - a));
                }
                a = b;
            }
            c.key = name;
            if (!parse_value(rest.substr(eq + 1), c, comment, has)) return false;
        } else if (img.substr(8, 2) == "= " && !commentary(key)) {
            if (!valid_keyword(key)) return false;
            c.key = std::string(key);
            if (!parse_value(img.substr(10), c, comment, has)) return false;
        } else if (commentary(key)) {
            c.key = std::string(key);
            c.kind = ParsedCard::Commentary;
            c.text = std::string(rstrip(img.substr(8)));
            cards.push_back(std::move(c));
            continue;
        } else {
            return false;                 // a keyword without a value indicator
        }
        std::string com(has ? strip(comment) : std::string_view());
        // a long string continued on CONTINUE cards (the '&' convention)
        while (c.kind == ParsedCard::String && !c.text.empty() && c.text.back() == '&' &&
               i < n && all.substr(80 * i, 8) == "CONTINUE") {
            if (!printable(i)) return false;
            ParsedCard part;
            std::string_view pc;
            bool phas = false;
            if (!parse_value(all.substr(80 * i + 8, 72), part, pc, phas) ||
                part.kind != ParsedCard::String)
                return false;
            c.text.pop_back();
            c.text += part.text;
            if (phas && !pc.empty()) {
                std::string joined = com + " " + std::string(strip(pc));
                com = std::string(strip(joined));
            }
            ++i;
        }
        c.comment = std::move(com);
        cards.push_back(std::move(c));
    }
    return false;                         // no END card
}

}  // namespace mosaicfit
