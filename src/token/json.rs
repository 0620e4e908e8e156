//! One pass over a token's header or payload: checks that the text is one JSON object, as
//! serde_json reads JSON, that no object anywhere in it has the same key twice, and lists the
//! members of every object in it for the token's rules to read.
//!
//! A key twice is refused at every level: two readers of the same token that keep different
//! copies of a repeated key (the first, the last) would disagree on what it grants.

use std::borrow::Cow;

/// Why a text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not one JSON object, or a key of the object itself that is not a valid string.
    NotObject,
    /// Some object in it has the same key twice (compared as the strings they spell).
    KeyTwice,
}

/// One member of an object, as byte ranges of the text.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// The key's text between its quotes.
    key: (u32, u32),
    /// The key's text has an escape (`\u0061`): compare it decoded.
    key_escaped: bool,
    /// The value's text, brackets included for an object or an array.
    value: (u32, u32),
    /// The value is a string with an escape.
    value_escaped: bool,
    /// The index just past this member's descendants in [`Object::members`]: its next sibling's,
    /// if it has one.
    end: u32,
}

/// A JSON object's text and the members of every object in it, in the order of the text (each
/// member before its descendants).
pub(super) struct Object<'a> {
    text: &'a str,
    members: Vec<Member>,
}

/// A container being read: where its members start in the list, and which member holds it.
#[derive(Clone, Copy)]
struct Frame {
    object: bool,
    first: usize,
    holder: Option<usize>,
}

impl<'a> Object<'a> {
    /// Reads `text`, which must be one JSON object with nothing but JSON whitespace around it.
    ///
    /// Accepts what serde_json accepts, and keys of the object itself must be valid strings, as
    /// they are when serde_json reads a struct; keys and strings deeper in are checked only for
    /// their escapes' syntax (serde_json skips them the same way). Nesting is unbounded: read
    /// without recursion.
    pub(super) fn scan(text: &'a str) -> Result<Object<'a>, Refusal> {
        // A token's payload has some twenty members, its header three or four.
        let mut members: Vec<Member> = Vec::with_capacity(text.len() / 16);
        let mut cur = Cursor {
            bytes: text.as_bytes(),
            at: 0,
        };
        cur.skip_ws();
        if cur.peek() != Some(b'{') {
            return Err(Refusal::NotObject);
        }
        let mut frames: Vec<Frame> = Vec::with_capacity(8);
        // The member whose value is read next (none in an array, or for the object itself).
        let mut holder: Option<usize> = None;
        loop {
            cur.skip_ws();
            let start = cur.at;
            if let Some(h) = holder {
                members[h].value.0 = offset(start);
            }
            match cur.next().ok_or(Refusal::NotObject)? {
                open @ (b'{' | b'[') => {
                    let close = if open == b'{' { b'}' } else { b']' };
                    cur.skip_ws();
                    if cur.peek() == Some(close) {
                        cur.at += 1;
                    } else {
                        frames.push(Frame {
                            object: open == b'{',
                            first: members.len(),
                            holder,
                        });
                        holder = if open == b'{' {
                            Some(cur.member(&mut members, frames.len() == 1)?)
                        } else {
                            None
                        };
                        continue;
                    }
                }
                b'"' => {
                    let escaped = cur.string()?;
                    if let Some(h) = holder {
                        members[h].value_escaped = escaped;
                    }
                }
                b't' => cur.literal(b"rue")?,
                b'f' => cur.literal(b"alse")?,
                b'n' => cur.literal(b"ull")?,
                b'-' | b'0'..=b'9' => cur.number(start)?,
                _ => return Err(Refusal::NotObject),
            }
            // A value ended: record it, then close every container that ends with it.
            loop {
                if let Some(h) = holder.take() {
                    members[h].value.1 = offset(cur.at);
                    members[h].end = offset(members.len());
                }
                let Some(&frame) = frames.last() else {
                    cur.skip_ws();
                    if cur.at != cur.bytes.len() {
                        return Err(Refusal::NotObject);
                    }
                    return Ok(Object { text, members });
                };
                cur.skip_ws();
                match (cur.next(), frame.object) {
                    (Some(b','), true) => {
                        holder = Some(cur.member(&mut members, frames.len() == 1)?);
                        break;
                    }
                    (Some(b','), false) => break,
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        if frame.object {
                            check_keys(text, &members, frame.first)?;
                        }
                        holder = frame.holder;
                        frames.pop();
                    }
                    _ => return Err(Refusal::NotObject),
                }
            }
        }
    }

    /// The object's own members.
    pub(super) fn members(&self) -> Members<'_, 'a> {
        Members {
            object: self,
            next: 0,
            end: self.members.len(),
        }
    }
}

/// The members of one object, in the order of the text.
pub(super) struct Members<'o, 'a> {
    object: &'o Object<'a>,
    next: usize,
    end: usize,
}

impl<'o, 'a> Iterator for Members<'o, 'a> {
    type Item = Entry<'o, 'a>;
    fn next(&mut self) -> Option<Entry<'o, 'a>> {
        if self.next >= self.end {
            return None;
        }
        let entry = Entry {
            object: self.object,
            index: self.next,
        };
        self.next = self.object.members[self.next].end as usize;
        Some(entry)
    }
}

/// One member of an object.
#[derive(Clone, Copy)]
pub(super) struct Entry<'o, 'a> {
    object: &'o Object<'a>,
    index: usize,
}

impl<'o, 'a> Entry<'o, 'a> {
    fn member(&self) -> &Member {
        &self.object.members[self.index]
    }

    /// The key, if it is spelt without escapes (the text between its quotes).
    pub(super) fn plain_key(&self) -> Option<&'a str> {
        let m = self.member();
        (!m.key_escaped).then(|| span(self.object.text, m.key))
    }

    /// The key as the string it spells; `None` for an escape that is not a valid string (a lone
    /// surrogate), which [`Object::scan`] refuses in the object's own keys.
    pub(super) fn key(&self) -> Option<Cow<'a, str>> {
        let m = self.member();
        let text = span(self.object.text, m.key);
        if m.key_escaped {
            decode_str(text).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(text))
        }
    }

    /// The value's JSON text.
    pub(super) fn value(&self) -> &'a str {
        span(self.object.text, self.member().value)
    }

    /// The value, if it is a string spelt without escapes (the text between its quotes).
    pub(super) fn plain_str(&self) -> Option<&'a str> {
        let inner = self.value().strip_prefix('"')?.strip_suffix('"')?;
        (!self.member().value_escaped).then_some(inner)
    }

    /// The value, if it is a string: borrowed from the text unless spelt with escapes; `None` also
    /// for an escape that is not a valid string (a lone surrogate).
    pub(super) fn string(&self) -> Option<Cow<'a, str>> {
        let inner = self.value().strip_prefix('"')?.strip_suffix('"')?;
        if self.member().value_escaped {
            decode_str(inner).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    /// The members of the value, when it is an object (none for an empty object or any other
    /// value).
    pub(super) fn fields(&self) -> Members<'o, 'a> {
        let m = self.member();
        let is_object = self.value().starts_with('{');
        Members {
            object: self.object,
            next: self.index + 1,
            end: if is_object { m.end as usize } else { 0 },
        }
    }
}

fn span(text: &str, (start, end): (u32, u32)) -> &str {
    text.get(start as usize..end as usize).unwrap_or_default()
}

/// A byte offset in a text no longer than a token (16 KiB).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Refuses a key twice among the members of one object, the first of which is at `first`.
fn check_keys(text: &str, members: &[Member], first: usize) -> Result<(), Refusal> {
    let bytes = text.as_bytes();
    let raw = |m: &Member| {
        bytes
            .get(m.key.0 as usize..m.key.1 as usize)
            .unwrap_or_default()
    };
    // The usual object: a few keys without escapes, compared as they are written.
    let mut few: [&[u8]; 8] = [&[]; 8];
    let mut n = 0;
    let mut i = first;
    while let Some(m) = members.get(i) {
        if n == few.len() || m.key_escaped {
            return check_many_keys(text, members, first);
        }
        let key = raw(m);
        if few[..n].contains(&key) {
            return Err(Refusal::KeyTwice);
        }
        few[n] = key;
        n += 1;
        i = m.end as usize;
    }
    Ok(())
}

/// [`check_keys`] for many keys, or keys with escapes: sorted, as the bytes they spell, so that
/// the check stays n log n.
#[cold]
fn check_many_keys(text: &str, members: &[Member], first: usize) -> Result<(), Refusal> {
    let bytes = text.as_bytes();
    let mut keys: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut i = first;
    while let Some(m) = members.get(i) {
        let raw = bytes
            .get(m.key.0 as usize..m.key.1 as usize)
            .unwrap_or_default();
        keys.push(if m.key_escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        });
        i = m.end as usize;
    }
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(Refusal::KeyTwice);
    }
    Ok(())
}

/// The string the text between a JSON string's quotes spells, if it is a valid one (serde_json
/// refuses a lone surrogate in a string it reads).
pub(super) fn decode_str(inner: &str) -> Option<String> {
    serde_json::from_str::<String>(&format!("\"{inner}\"")).ok()
}

/// The bytes the text between a JSON string's quotes spells, lone surrogates included (written
/// as WTF-8, which no valid UTF-8 text contains): two spellings of one string give the same bytes.
fn unescape(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len());
    let hex = |at: usize| {
        inner
            .get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let escape = inner.get(i + 1).copied().unwrap_or_default();
        i += 2;
        let code = match escape {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => u32::from(b'\n'),
            b'r' => u32::from(b'\r'),
            b't' => u32::from(b'\t'),
            b'u' => {
                let n = hex(i).unwrap_or_default();
                i += 4;
                let pair = (0xD800..0xDC00).contains(&n) && inner.get(i..i + 2) == Some(b"\\u");
                match hex(i + 2).filter(|low| pair && (0xDC00..0xE000).contains(low)) {
                    Some(low) => {
                        i += 6;
                        0x10000 + ((n - 0xD800) << 10) + (low - 0xDC00)
                    }
                    None => n,
                }
            }
            other => u32::from(other), // `"`, `\`, `/`
        };
        push_wtf8(code, &mut out);
    }
    out
}

/// UTF-8's encoding of a code point, surrogates included.
fn push_wtf8(n: u32, out: &mut Vec<u8>) {
    let cont = |shift: u32| 0x80 | ((n >> shift) & 0x3F) as u8;
    match n {
        0..=0x7F => out.push(n as u8),
        0x80..=0x7FF => out.extend([0xC0 | (n >> 6) as u8, cont(0)]),
        0x800..=0xFFFF => out.extend([0xE0 | (n >> 12) as u8, cont(6), cont(0)]),
        _ => out.extend([0xF0 | (n >> 18) as u8, cont(12), cont(6), cont(0)]),
    }
}

/// Bytes that end a run of plain string content: the quote, the backslash, control characters.
static STRING_STOP: [bool; 256] = {
    let mut stop = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stop[b] = true;
        b += 1;
    }
    stop[b'"' as usize] = true;
    stop[b'\\' as usize] = true;
    stop
};

/// Where the plain content of a string that goes on at `at` ends: the first quote, backslash or
/// control character at or after `at` (or the end of the text).
#[inline(always)]
fn skip_plain(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .position(|&b| STRING_STOP[usize::from(b)])
        .unwrap_or(rest.len())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, rest: &[u8]) -> Result<(), Refusal> {
        if !self.bytes[self.at..].starts_with(rest) {
            return Err(Refusal::NotObject);
        }
        self.at += rest.len();
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let from = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - from
    }

    /// A number from `start` (its first byte, a `-` or a digit, already read).
    fn number(&mut self, start: usize) -> Result<(), Refusal> {
        self.at = start + usize::from(self.bytes[start] == b'-');
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Refusal::NotObject),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(Refusal::NotObject);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(Refusal::NotObject);
            }
        }
        Ok(())
    }

    /// The rest of a string whose opening quote was read; whether it has an escape.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, Refusal> {
        let bytes = self.bytes;
        let mut at = self.at;
        let mut escaped = false;
        loop {
            at = skip_plain(bytes, at);
            match bytes.get(at) {
                Some(b'"') => {
                    self.at = at + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match bytes.get(at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at += 2,
                        Some(b'u')
                            if bytes
                                .get(at + 2..at + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            at += 6
                        }
                        _ => return Err(Refusal::NotObject),
                    }
                }
                // End of text, or a control character.
                _ => return Err(Refusal::NotObject),
            }
        }
    }

    /// A member's key and its colon; the member is added to `members` and its index returned.
    /// `own` says the key belongs to the object itself, whose keys must be valid strings.
    #[inline(always)]
    fn member(&mut self, members: &mut Vec<Member>, own: bool) -> Result<usize, Refusal> {
        self.skip_ws();
        if self.next() != Some(b'"') {
            return Err(Refusal::NotObject);
        }
        let start = self.at;
        let key_escaped = self.string()?;
        let key = (offset(start), offset(self.at - 1));
        if own && key_escaped {
            // The text is valid UTF-8, so any slice between the quotes is.
            let text = std::str::from_utf8(&self.bytes[start..self.at - 1]).unwrap_or_default();
            decode_str(text).ok_or(Refusal::NotObject)?;
        }
        self.skip_ws();
        if self.next() != Some(b':') {
            return Err(Refusal::NotObject);
        }
        members.push(Member {
            key,
            key_escaped,
            value: (0, 0),
            value_escaped: false,
            end: 0,
        });
        Ok(members.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Result<Vec<(String, String)>, Refusal> {
        let object = Object::scan(text)?;
        Ok(object
            .members()
            .map(|e| (e.key().unwrap().into_owned(), e.value().to_owned()))
            .collect())
    }

    #[test]
    fn accepts_what_serde_json_accepts_and_refuses_what_it_refuses() {
        let texts = [
            r#"{}"#,
            r#" { } "#,
            r#"{"a":1}"#,
            r#"{"a":-0,"b":1.5e-3,"c":2E+10,"d":0.0,"e":-12}"#,
            r#"{"a":[],"b":[1,[2,[3]],{"c":{}}],"d":true,"e":false,"f":null}"#,
            "{\"a\"\t:\r\n\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD800\"}",
            r#"{"é":"😀"}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":-}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12G4"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            r#"{"a":[1}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":"#,
            r#"{"a""#,
            r#"{"#,
            r#"[]"#,
            r#""a""#,
            "",
            "\u{a0}{}",
            r#"{"\uDC00":1}"#,
            r#"{"a":{"\uDC00":1}}"#,
        ];
        for text in texts {
            let serde = serde_json::from_str::<
                std::collections::HashMap<String, serde::de::IgnoredAny>,
            >(text)
            .is_ok();
            assert_eq!(scan(text).is_ok(), serde, "{text}");
        }
    }

    #[test]
    fn lists_the_objects_own_members_with_their_values() {
        let members = scan(r#"{ "a" : [1, {"b":2}] ,"c":{"d":{}},"e":"x","f\u0067":{}}"#).unwrap();
        let members: Vec<(&str, &str)> = members
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            members,
            [
                ("a", r#"[1, {"b":2}]"#),
                ("c", r#"{"d":{}}"#),
                ("e", r#""x""#),
                ("fg", "{}")
            ]
        );
        let object = Object::scan(r#"{"a":{"b":1,"c":{"d":2}},"e":[{"f":3}]}"#).unwrap();
        fn fields(e: Entry<'_, '_>) -> Vec<String> {
            e.fields()
                .map(|f| f.plain_key().unwrap().to_owned())
                .collect()
        }
        let mut top = object.members();
        assert_eq!(fields(top.next().unwrap()), ["b", "c"]);
        assert!(
            fields(top.next().unwrap()).is_empty(),
            "an array has no fields"
        );
        assert!(top.next().is_none());
    }

    #[test]
    fn a_key_twice_is_refused_at_every_depth_and_however_it_is_spelt() {
        for text in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":{"b":1,"c":2,"b":3}}"#,
            r#"{"a":[{"b":[{"c":1,"c":1}]}]}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"x":{"\uD83D\uDE00":1,"😀":2}}"#,
            r#"{"x":{"\uD800":1,"\ud800":2}}"#,
            r#"{"x":{"\/":1,"/":2}}"#,
        ] {
            assert_eq!(scan(text).unwrap_err(), Refusal::KeyTwice, "{text}");
        }
        for text in [
            r#"{"a":{"a":{"a":1}}}"#,
            r#"{"a":[{"b":1},{"b":1}]}"#,
            r#"{"x":{"\uD800":1,"\uDC00":2,"\uD800\uDC00":3}}"#,
            r#"{"x":{"a":1,"A":2,"a ":3}}"#,
        ] {
            assert!(scan(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn strings_are_borrowed_when_plain_and_decoded_when_escaped() {
        let object =
            Object::scan(r#"{"a":"SK12","b":"S\u004b12\"","c":12,"d":null,"e":"\uD800"}"#).unwrap();
        let entries: Vec<Entry<'_, '_>> = object.members().collect();
        assert!(matches!(entries[0].string(), Some(Cow::Borrowed("SK12"))));
        assert_eq!(entries[0].plain_str(), Some("SK12"));
        assert_eq!(entries[1].string().as_deref(), Some("SK12\""));
        assert_eq!(entries[1].plain_str(), None);
        for e in &entries[2..] {
            assert_eq!(e.string(), None, "{}", e.value());
            assert_eq!(e.plain_str(), None, "{}", e.value());
        }
    }

    #[test]
    fn deep_nesting_is_read_without_recursion() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(scan(&deep).unwrap().len(), 1);
    }

    #[test]
    fn skip_plain_stops_where_a_byte_by_byte_search_stops() {
        let naive = |bytes: &[u8], at: usize| {
            (at..bytes.len())
                .find(|&i| STRING_STOP[usize::from(bytes[i])])
                .unwrap_or(bytes.len())
        };
        let mut text =
            b"0123456789abcdefghij\xc3\xa9\xf0\x9f\x98\x80ABCDEFGHIJKLMNOPQRSTUVWXYZ".to_vec();
        for stop in (0u8..0x20).chain([b'"', b'\\', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']']) {
            for at in 0..text.len() {
                let saved = text[at];
                text[at] = stop;
                for from in 0..text.len() {
                    assert_eq!(
                        skip_plain(&text, from),
                        naive(&text, from),
                        "{stop:#x} at {at} from {from}"
                    );
                }
                text[at] = saved;
            }
        }
    }

    #[test]
    fn unescape_spells_each_string_one_way() {
        assert_eq!(unescape(br"a\u0062\n\/"), b"ab\n/");
        assert_eq!(unescape(br"\uD83D\uDE00"), "😀".as_bytes());
        assert_eq!(unescape(br"\u00e9"), "é".as_bytes());
        assert_eq!(unescape(br"\uD800x"), [0xED, 0xA0, 0x80, b'x']);
    }
}
