//! Turning command-line words into task arguments.
//!
//! A word is JSON when it parses as JSON (`1000`, `0.5`, `[1,2]`, `{"a":1}`, `"text"`), else a
//! plain string. A word `A..B` (or `A..=B`) of integers is a range and expands to its items in
//! `cluster map`.

use crate::exit::Usage;
use anyhow::Result;
use serde_json::Value;

/// One word as a JSON value: JSON if it parses, else a string.
pub fn parse_value(word: &str) -> Value {
    serde_json::from_str(word).unwrap_or_else(|_| Value::String(word.to_owned()))
}

/// The argument of `cluster call FUNCTION WORD…`: nothing → null, one word → its value,
/// several → an array (a tuple for the function).
pub fn call_argument(words: &[String]) -> Value {
    match words {
        [] => Value::Null,
        [one] => parse_value(one),
        many => Value::Array(many.iter().map(|w| parse_value(w)).collect()),
    }
}

/// Largest range `cluster map` expands, to keep a typo from eating all memory.
const MAX_RANGE: u64 = 100_000_000;

/// A word as a range, if it is one.
pub fn parse_range(word: &str) -> Result<Option<std::ops::Range<i64>>> {
    let (a, b, inclusive) = if let Some((a, b)) = word.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = word.split_once("..") {
        (a, b, false)
    } else {
        return Ok(None);
    };
    let (Ok(start), Ok(end)) = (a.trim().parse::<i64>(), b.trim().parse::<i64>()) else {
        // `a..b` is a word; `0..abc`, `0...5` or `1.5..3` are ranges written wrong.
        let numeric = |s: &str| s.trim().parse::<f64>().is_ok();
        if numeric(a) || numeric(b) {
            return Err(Usage(format!(
                "{word:?} is not a range: write START..END or START..=END with whole numbers, like 0..1000"
            ))
            .into());
        }
        return Ok(None);
    };
    let end = if inclusive {
        end.saturating_add(1)
    } else {
        end
    };
    if end < start {
        return Err(Usage(format!("range {word} is empty or reversed")).into());
    }
    if (end - start) as u64 > MAX_RANGE {
        return Err(Usage(format!("range {word} has more than {MAX_RANGE} items")).into());
    }
    Ok(Some(start..end))
}

/// The items of `cluster map`: ranges expanded, other words parsed as values.
pub fn map_items(words: &[String]) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    for word in words {
        match parse_range(word)? {
            Some(range) => items.extend(range.map(Value::from)),
            None => items.push(parse_value(word)),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_become_values() {
        assert_eq!(parse_value("1000"), json!(1000));
        assert_eq!(parse_value("0.5"), json!(0.5));
        assert_eq!(parse_value("hello"), json!("hello"));
        assert_eq!(parse_value("[1,2]"), json!([1, 2]));
        assert_eq!(call_argument(&[]), Value::Null);
        assert_eq!(call_argument(&["1".into(), "x".into()]), json!([1, "x"]));
    }

    #[test]
    fn ranges_expand() {
        assert_eq!(
            map_items(&["0..3".into()]).unwrap(),
            vec![json!(0), json!(1), json!(2)]
        );
        assert_eq!(
            map_items(&["1..=2".into(), "7".into()]).unwrap(),
            vec![json!(1), json!(2), json!(7)]
        );
        assert_eq!(map_items(&["a..b".into()]).unwrap(), vec![json!("a..b")]);
        assert!(map_items(&["5..1".into()]).is_err());
        for bad in ["0..abc", "0...5", "1.5..3", "..7"] {
            let err = map_items(&[bad.into()]).unwrap_err();
            assert_eq!(crate::exit::code(&err), crate::exit::USAGE, "{bad}");
            assert!(err.to_string().contains("not a range"), "{bad}: {err}");
        }
        assert!(map_items(&["0..1000000000000".into()]).is_err());
    }
}
