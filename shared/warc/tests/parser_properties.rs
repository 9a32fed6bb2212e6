//! Property tests of the WARC record reader: it never panics, and damage to some records never
//! costs a good record (in gzip members, where each record is framed by its own member).

use dsllm_warc::record::{read_records, Event};
use dsllm_warc::write::{conversion, write_gzip_member};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Damage {
    None,
    ContentLength(i64),
    TruncateMember(usize),
    FlipBytes(usize),
    DropHeaderColon,
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => (-20i64..40).prop_filter("non-zero", |d| *d != 0).prop_map(Damage::ContentLength),
        1 => (1usize..200).prop_map(Damage::TruncateMember),
        1 => (0usize..1000).prop_map(Damage::FlipBytes),
        1 => Just(Damage::DropHeaderColon),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
    ]
}

fn record(i: usize, text: &str) -> Vec<u8> {
    conversion(&format!("https://p.example/{i}"), "2024-01-01T00:00:00Z", &format!("id{i}"), None, text)
}

fn apply(record: Vec<u8>, damage: &Damage) -> Vec<u8> {
    let mut member = Vec::new();
    let body = match damage {
        Damage::ContentLength(delta) => {
            let s = String::from_utf8(record).unwrap();
            let start = s.find("Content-Length: ").unwrap() + 16;
            let end = start + s[start..].find("\r\n").unwrap();
            let n: i64 = s[start..end].parse().unwrap();
            format!("{}{}{}", &s[..start], (n + delta).max(0), &s[end..]).into_bytes()
        }
        Damage::DropHeaderColon => String::from_utf8(record).unwrap().replacen("WARC-Date:", "WARC-Date", 1).into_bytes(),
        _ => record,
    };
    write_gzip_member(&mut member, &body).unwrap();
    match damage {
        Damage::TruncateMember(k) => member.truncate(member.len().saturating_sub(*k).max(1)),
        Damage::FlipBytes(at) => {
            let n = member.len();
            if n > 20 {
                let i = 10 + at % (n - 18);
                member[i] ^= 0xff;
            }
        }
        Damage::Garbage(bytes) => member.extend_from_slice(bytes),
        _ => {}
    }
    member
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn good_records_survive_damaged_neighbours(
        texts in proptest::collection::vec("\\PC{1,300}", 1..12),
        damages in proptest::collection::vec(damage(), 12),
    ) {
        let mut file = Vec::new();
        let mut expected = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let d = &damages[i];
            // A truncated member must be the last one: it eats the rest of the file.
            let d = match d { Damage::TruncateMember(_) if i + 1 != texts.len() => &Damage::None, d => d };
            if matches!(d, Damage::None | Damage::Garbage(_)) {
                expected.push(text.clone());
            }
            file.extend(apply(record(i, text), d));
        }
        let mut got = Vec::new();
        read_records(file.as_slice(), |event| {
            if let Event::Record(r) = event {
                got.push(String::from_utf8_lossy(&r.content).into_owned());
            }
        }).unwrap();
        // Flipped bytes may, rarely, still decode into a valid record: expected ⊆ got, in order.
        let mut it = got.iter();
        for e in &expected {
            prop_assert!(it.any(|g| g == e), "lost a good record: {:?}; texts {:?}, damages {:?}", e, texts, damages);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_records(bytes.as_slice(), |_| {});
        let mut gz = vec![0x1f, 0x8b, 0x08];
        gz.extend_from_slice(&bytes);
        let _ = read_records(gz.as_slice(), |_| {});
    }

    #[test]
    fn mutated_valid_files_never_panic(
        texts in proptest::collection::vec("\\PC{0,100}", 1..5),
        cuts in proptest::collection::vec((0usize..2000, any::<u8>()), 0..8),
        plain in any::<bool>(),
    ) {
        let mut file = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            if plain { file.extend(record(i, t)); } else { write_gzip_member(&mut file, &record(i, t)).unwrap(); }
        }
        for (at, byte) in cuts {
            if !file.is_empty() {
                let n = file.len();
                file[at % n] = byte;
            }
        }
        let _ = read_records(file.as_slice(), |_| {});
    }
}


