//! Checks of the response parser (coreloop's `framing::ResponseDecoder`, which the HTTP
//! client and loadtest share), through loadtest's whole-response `parse_response`.

use loadtest::fuzzing::{parse_response, Parsed};

/// The response parser on `data` (its first byte says whether the request was
/// HEAD): no panic; a whole response lies within the buffer and parses the same from
/// a buffer holding exactly it; every shorter prefix of it is `Partial` (so a response
/// split across reads is never taken for garbage, nor for a shorter response).
pub fn response_parser(data: &[u8]) {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let head = flags & 1 == 1;
    let whole = parse_response(buf, head);
    if let Parsed::Whole { len, .. } = whole {
        assert!(len > 0 && len <= buf.len(), "length {len} of {}", buf.len());
        assert_eq!(
            parse_response(&buf[..len], head),
            whole,
            "exactly the response"
        );
        let step = (len / 64).max(1);
        for cut in (0..len).step_by(step).chain([len - 1]) {
            assert_eq!(
                parse_response(&buf[..cut], head),
                Parsed::Partial,
                "a prefix of {cut} bytes of a {len}-byte response"
            );
        }
    }
}
