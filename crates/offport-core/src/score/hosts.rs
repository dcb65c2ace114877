//! What a destination name looks like: an IP literal, an algorithmically generated name, a
//! public address.

use super::*;

/// What a destination name looks like; see [`looks_algorithmic`] and [`is_ip_literal`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HostVerdict {
    pub(crate) ip_literal: bool,
    pub(crate) algorithmic: bool,
}

impl HostVerdict {
    pub(crate) fn of(host: &str) -> Self {
        HostVerdict {
            ip_literal: is_ip_literal(host),
            algorithmic: looks_algorithmic(host),
        }
    }
}

/// True when `host` looks algorithmically generated: judged on the label its owner registered
/// (the one left of the public suffix, from the Public Suffix List: `googlevideo` in
/// `rr4---sn-5hne6nzk.googlevideo.com`, `psqdlcmzsstkkp` in `psqdlcmzsstkkp.top`), by character
/// entropy, digit share and consonant runs. A DGA makes names to register; the labels below a
/// registered name are its owner's choice (CDN node names, tenant ids) and say nothing of it.
/// Where the suffix is not on the list, every label but the last is judged. A heuristic, tuned
/// to stay quiet on real CDN and API names; it is one evidence item, never a finding on its
/// own. Runs on every scored session, so it does not allocate.
pub fn looks_algorithmic(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return false;
    }
    let trimmed = host.trim_end_matches('.');
    if let Some(registered) = registered_label(trimmed) {
        return registered.len() >= 10 && label_looks_algorithmic(registered.as_bytes());
    }
    let labels = trimmed.split('.').count();
    trimmed
        .split('.')
        .take(labels.saturating_sub(1).max(1))
        .filter(|label| label.len() >= 10)
        .any(|label| label_looks_algorithmic(label.as_bytes()))
}

/// The label left of `host`'s ICANN public suffix, when the suffix is a known one. A private
/// suffix (`cloudfront.net`, `github.io`) is a provider's namespace whose labels the provider
/// generates for every customer: the label judged is the provider's own.
pub(crate) fn registered_label(host: &str) -> Option<&str> {
    let mut tail = host;
    loop {
        let suffix = psl::suffix(tail.as_bytes()).filter(|s| s.is_known())?;
        let bytes = suffix.as_bytes();
        if suffix.typ() == Some(psl::Type::Icann) {
            let rest = host.get(..host.len().checked_sub(bytes.len() + 1)?)?;
            return rest.rsplit('.').next().filter(|label| !label.is_empty());
        }
        // Its ICANN part is a shorter suffix of the same name.
        let text = host.get(host.len().checked_sub(bytes.len())?..)?;
        tail = text.split_once('.')?.1;
    }
}

pub(crate) fn label_looks_algorithmic(label: &[u8]) -> bool {
    let mut letters = 0usize;
    let mut vowels = 0usize;
    let mut digits = 0usize;
    let mut run = 0usize;
    let mut longest_run = 0usize;
    for byte in label.iter().map(u8::to_ascii_lowercase) {
        if byte.is_ascii_alphabetic() {
            letters += 1;
            if b"aeiou".contains(&byte) {
                vowels += 1;
            }
        }
        if byte.is_ascii_digit() {
            digits += 1;
        }
        if byte.is_ascii_alphabetic() && !b"aeiouy".contains(&byte) {
            run += 1;
            longest_run = longest_run.max(run);
        } else {
            run = 0;
        }
    }
    let vowel_share = vowels as f64 / letters.max(1) as f64;
    let digit_share = digits as f64 / label.len().max(1) as f64;
    let shaped = vowel_share < 0.25 || longest_run >= 5 || (digit_share > 0.2 && digit_share < 0.8);
    if !shaped {
        return false;
    }
    // A label with almost no vowels or a run of six consonants is no word or brand in any
    // language; a short one cannot reach a long one's entropy (14 random consonants carry
    // 2.9-3.6 bits), so it needs only varied characters: at least half of them distinct (a
    // repeated pattern such as `xxxxxxxxxx` is not a generated name). Other shaped labels need
    // 3.3 bits.
    if vowel_share < 0.1 || longest_run >= 6 {
        let mut seen = [false; 256];
        let mut distinct = 0usize;
        for byte in label.iter().map(u8::to_ascii_lowercase) {
            if let Some(slot) = seen.get_mut(usize::from(byte)) {
                if !*slot {
                    *slot = true;
                    distinct += 1;
                }
            }
        }
        return distinct * 2 >= label.len() && distinct >= 6;
    }
    shannon_entropy_of(label.iter().map(u8::to_ascii_lowercase)) >= 3.3
}

/// An address on the internet: not private, loopback, link-local, multicast, shared (CGNAT)
/// or unspecified.
pub(crate) fn is_public_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b)))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

pub(crate) fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}
