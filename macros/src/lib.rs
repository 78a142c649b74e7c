//! `#[on_both_backends]`: one test, run on each coreloop backend.
//!
//! ```ignore
//! #[on_both_backends]
//! #[test]
//! fn timers_fire_in_order(backend: Backend) { /* ... */ }
//! ```
//!
//! The function is written once, with its `#[test]` where a reader (or `grep`, or an IDE)
//! looks for it, and takes the backend as its argument. The attribute, which must come
//! above `#[test]`, keeps the function (without `#[test]`) and adds a module of the same
//! name with two tests, `NAME::epoll` and `NAME::uring`, that call it with
//! `Backend::Epoll` and `Backend::Uring`. `#[ignore]` and `#[should_panic]` written on the
//! function apply to both tests.
//!
//! Where io_uring cannot be set up, the `uring` test prints why and passes without
//! running (a test binary on an old kernel or in a seccomp sandbox still runs its epoll
//! half), unless `CORELOOP_REQUIRE_URING` is set, as the project's CI sets it: then it
//! fails. Nothing is skipped silently.
//!
//! Written on the raw token stream (no syn): the input is a plain `fn` item, and all
//! this needs from it is the attributes and the name.

use proc_macro::{Delimiter, Group, Ident, Spacing, Span, TokenStream, TokenTree};

/// Runs the annotated test function on both backends; see the crate docs.
#[proc_macro_attribute]
pub fn on_both_backends(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return error("#[on_both_backends] takes no arguments");
    }
    let tokens: Vec<TokenTree> = item.into_iter().collect();
    let mut kept = Vec::new(); // the function, without its #[test]
    let mut test_attrs = Vec::new(); // #[ignore], #[should_panic]: for the generated tests
    let mut saw_test = false;
    let mut name = None;
    let mut i = 0;
    while i < tokens.len() {
        if let (TokenTree::Punct(p), Some(TokenTree::Group(g))) = (&tokens[i], tokens.get(i + 1)) {
            if p.as_char() == '#' && g.delimiter() == Delimiter::Bracket {
                match first_ident(g).as_deref() {
                    Some("test") => saw_test = true,
                    Some("ignore" | "should_panic") => {
                        test_attrs.push(tokens[i].clone());
                        test_attrs.push(tokens[i + 1].clone());
                    }
                    _ => {
                        kept.push(tokens[i].clone());
                        kept.push(tokens[i + 1].clone());
                    }
                }
                i += 2;
                continue;
            }
        }
        if let TokenTree::Ident(id) = &tokens[i] {
            if name.is_none() && id.to_string() == "fn" {
                if let Some(TokenTree::Ident(n)) = tokens.get(i + 1) {
                    name = Some(n.clone());
                }
            }
        }
        kept.push(tokens[i].clone());
        i += 1;
    }
    let Some(name) = name else {
        return error("#[on_both_backends] goes on a fn");
    };
    if !saw_test {
        return error("#[on_both_backends] goes above #[test]: write `#[on_both_backends] #[test] fn name(backend: Backend)`");
    }
    let attrs: String = test_attrs.iter().map(ToString::to_string).collect();
    let generated = format!(
        "#[cfg(test)]
        mod {name} {{
            {attrs}
            #[test]
            fn epoll() {{
                super::{name}(::coreloop::Backend::Epoll)
            }}
            {attrs}
            #[test]
            fn uring() {{
                // Probed on a thread of its own: a ring made and dropped here could
                // leave task work that interrupts this thread's next blocking call.
                let probe = ::std::thread::spawn(|| {{
                    ::coreloop::IoLoop::with_backend(::coreloop::Backend::Uring).map(drop)
                }})
                .join()
                .expect(\"the io_uring probe thread\");
                if let ::std::result::Result::Err(e) = probe {{
                    if ::std::env::var_os(\"CORELOOP_REQUIRE_URING\").is_some() {{
                        ::std::panic!(\"io_uring is unavailable ({{e}}) and CORELOOP_REQUIRE_URING is set\");
                    }}
                    ::std::eprintln!(\"skipped {name}::uring: io_uring is unavailable here ({{e}})\");
                    return;
                }}
                super::{name}(::coreloop::Backend::Uring)
            }}
        }}"
    );
    let mut out: TokenStream = kept.into_iter().collect();
    match generated.parse::<TokenStream>() {
        Ok(ts) => out.extend(ts),
        Err(e) => return error(&format!("#[on_both_backends]: {e}")),
    }
    out
}

/// The first identifier inside an attribute's brackets (`test` in `#[test]`).
fn first_ident(g: &Group) -> Option<String> {
    match g.stream().into_iter().next()? {
        TokenTree::Ident(id) => Some(id.to_string()),
        _ => None,
    }
}

/// `compile_error!(msg)` as tokens.
fn error(msg: &str) -> TokenStream {
    let span = Span::call_site();
    let mut lit: TokenStream = format!("{msg:?}").parse().unwrap_or_default();
    lit = lit
        .into_iter()
        .map(|mut t| {
            t.set_span(span);
            t
        })
        .collect();
    [
        TokenTree::Ident(Ident::new("compile_error", span)),
        TokenTree::Punct(proc_macro::Punct::new('!', Spacing::Alone)),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, lit)),
        TokenTree::Punct(proc_macro::Punct::new(';', Spacing::Alone)),
    ]
    .into_iter()
    .collect()
}
