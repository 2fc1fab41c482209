//! [`IntoFunction`]: what views accept as "the function to call".

use protocol::Function;

/// A function to call: a typed handle ([`Function<A, R>`], which fixes the argument and
/// result types) or a plain name (`&str`, `String`), for which the types come from the call
/// site (`view.apply::<u64, u64>("nth_prime", 10)`).
pub trait IntoFunction<A, R> {
    /// The name the function is registered under on the engines.
    fn function_name(&self) -> &str;
}

impl<A, R> IntoFunction<A, R> for Function<A, R> {
    fn function_name(&self) -> &str {
        self.name()
    }
}

impl<A, R> IntoFunction<A, R> for &str {
    fn function_name(&self) -> &str {
        self
    }
}

impl<A, R> IntoFunction<A, R> for String {
    fn function_name(&self) -> &str {
        self
    }
}

impl<A, R> IntoFunction<A, R> for &String {
    fn function_name(&self) -> &str {
        self
    }
}

/// What can be passed where a function takes an `A`: the value itself or a reference to it
/// (`view.apply(SUM, data)` or `view.apply(SUM, &data)`; `view.map(F, &items)` or
/// `view.map(F, items)`).
///
/// Unlike [`std::borrow::Borrow`] it has no `String → str` case, so a call by name infers
/// `A` from owned items (`view.map::<_, String>("echo", strings)`); references with calls by
/// name need `A` spelled out (`view.apply::<u64, u64>("double", &x)`).
pub trait Argument<A> {
    /// The argument.
    fn argument(&self) -> &A;
}

impl<A> Argument<A> for A {
    fn argument(&self) -> &A {
        self
    }
}

impl<A> Argument<A> for &A {
    fn argument(&self) -> &A {
        self
    }
}
