//! Money for people: an integer count of a currency's minor unit rendered the way finance reads
//! it (`$49.00`, `¥4,900`, `KWD 1.250`). Integer arithmetic only, never floats; one amount, one
//! currency (nothing here adds amounts).
//!
//! The exponent (digits after the decimal point) is Stripe's, kept with the currency type
//! ([`projections::Currency::exponent`]).

/// Symbols written before the amount; any other currency is written as its upper-case code
/// and a space (`KWD 1.250`), which no reader can mistake.
const SYMBOLS: [(&str, &str); 5] = [
    ("usd", "$"),
    ("eur", "€"),
    ("gbp", "£"),
    ("jpy", "¥"),
    ("inr", "₹"),
];

/// Digits after the decimal point for `currency` (ISO code, any case; see
/// [`projections::Currency::exponent`]); 2 for a code that is not three letters.
pub fn exponent(currency: &str) -> u32 {
    projections::Currency::parse(currency).map_or(2, |c| c.exponent())
}

/// `amount_minor` of `currency` for a person: sign, symbol or code, thousands separated by
/// commas, the currency's decimals after a point. `format(4900, "usd")` is `$49.00`,
/// `format(4900, "jpy")` `¥4,900`, `format(1250, "kwd")` `KWD 1.250`, `format(-4900, "usd")`
/// `-$49.00`.
pub fn format(amount_minor: i64, currency: &str) -> String {
    let digits = exponent(currency);
    let magnitude = amount_minor.unsigned_abs();
    let scale = 10u64.pow(digits);
    let (units, fraction) = (magnitude / scale, magnitude % scale);
    let mut text = String::new();
    if amount_minor < 0 {
        text.push('-');
    }
    let code = currency.to_ascii_lowercase();
    match SYMBOLS.iter().find(|(c, _)| *c == code) {
        Some((_, symbol)) => text.push_str(symbol),
        None => {
            text.push_str(&currency.to_ascii_uppercase());
            text.push(' ');
        }
    }
    text.push_str(&group_thousands(units));
    if digits > 0 {
        text.push_str(&format!(".{fraction:0width$}", width = digits as usize));
    }
    text
}

fn group_thousands(units: u64) -> String {
    let plain = units.to_string();
    let mut grouped = String::with_capacity(plain.len() + plain.len() / 3);
    for (i, digit) in plain.chars().enumerate() {
        if i > 0 && (plain.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_currency_gets_its_own_decimals() {
        assert_eq!(format(4900, "usd"), "$49.00");
        assert_eq!(format(4900, "jpy"), "¥4,900");
        assert_eq!(format(1250, "kwd"), "KWD 1.250");
        assert_eq!(format(1250, "KWD"), "KWD 1.250");
        assert_eq!(format(5, "eur"), "€0.05");
        assert_eq!(format(123_456_789, "gbp"), "£1,234,567.89");
        assert_eq!(format(100_000, "isk"), "ISK 1,000.00");
        assert_eq!(format(100_000, "mga"), "MGA 100,000");
        assert_eq!(format(0, "chf"), "CHF 0.00");
    }

    #[test]
    fn negatives_and_extremes_never_overflow() {
        assert_eq!(format(-4900, "usd"), "-$49.00");
        assert_eq!(format(-1, "bhd"), "-BHD 0.001");
        assert_eq!(format(i64::MIN, "jpy"), "-¥9,223,372,036,854,775,808");
        assert_eq!(format(i64::MAX, "usd"), "$92,233,720,368,547,758.07");
    }

    #[test]
    fn thousands_are_grouped_from_the_right() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(12_345_678), "12,345,678");
    }
}
