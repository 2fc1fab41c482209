//! What the stock engine functions take, so the CLI checks arguments before sending them:
//! `call nth_prime` with no argument, or `map --function nth_prime 0..=3 '"x"'`, are told in
//! plain words which value is wrong and what was expected, instead of a decoding error from
//! an engine. Functions the CLI does not know (those of your own engines) are not checked.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// One function's argument: in words, and a check.
struct Signature {
    name: &'static str,
    expects: &'static str,
    fits: fn(&Value) -> bool,
}

fn fits<A: DeserializeOwned>(v: &Value) -> bool {
    serde_json::from_value::<A>(v.clone()).is_ok()
}

fn stock() -> [Signature; 7] {
    use protocol::stock::*;
    [
        Signature {
            name: NOOP.name(),
            expects: "no argument",
            fits: fits::<()>,
        },
        Signature {
            name: WHOAMI.name(),
            expects: "no argument",
            fits: fits::<()>,
        },
        Signature {
            name: SLEEP.name(),
            expects: "a number of seconds",
            fits: fits::<f64>,
        },
        Signature {
            name: BUSY_WAIT.name(),
            expects: "a number of seconds",
            fits: fits::<f64>,
        },
        Signature {
            name: NTH_PRIME.name(),
            expects: "a whole number from 0 (u64)",
            fits: fits::<u64>,
        },
        Signature {
            name: SUM_RANGE.name(),
            expects: "a whole number from 0 (u64)",
            fits: fits::<u64>,
        },
        Signature {
            name: echo::<Value>().name(),
            expects: "any value",
            fits: |_| true,
        },
    ]
}

/// Checks `value` as the argument of `function`: `Err` says what was expected, in words.
pub fn check(function: &str, value: &Value) -> Result<(), String> {
    match stock().into_iter().find(|s| s.name == function) {
        Some(s) if !(s.fits)(value) => Err(if value.is_null() {
            format!("{function} takes {}, and none was given", s.expects)
        } else {
            format!("{function} takes {}, not {value}", s.expects)
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stock_arguments_are_checked_in_words() {
        assert!(check("nth_prime", &json!(5)).is_ok());
        assert_eq!(
            check("nth_prime", &json!("x")).unwrap_err(),
            "nth_prime takes a whole number from 0 (u64), not \"x\""
        );
        assert_eq!(
            check("nth_prime", &Value::Null).unwrap_err(),
            "nth_prime takes a whole number from 0 (u64), and none was given"
        );
        assert!(check("nth_prime", &json!(-1)).is_err());
        assert!(check("sleep", &json!(2)).is_ok());
        assert!(check("sleep", &json!(0.5)).is_ok());
        assert!(check("noop", &Value::Null).is_ok());
        assert!(check("noop", &json!(1)).is_err());
        assert!(check("echo", &json!({"a": [1]})).is_ok());
        // Functions of other engines are theirs to check.
        assert!(check("my_function", &json!("anything")).is_ok());
    }
}
