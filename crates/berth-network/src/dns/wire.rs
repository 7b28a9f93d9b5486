//! The few pieces of the DNS wire format (RFC 1035) the embedded server needs: read one
//! question, write an answer. Forwarded queries are relayed as opaque bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record type A.
pub(crate) const TYPE_A: u16 = 1;
/// Record type PTR.
pub(crate) const TYPE_PTR: u16 = 12;
/// Record type AAAA.
pub(crate) const TYPE_AAAA: u16 = 28;
/// Query type ANY.
pub(crate) const TYPE_ANY: u16 = 255;
/// Class IN.
pub(crate) const CLASS_IN: u16 = 1;

/// Response codes.
pub(crate) const NOERROR: u8 = 0;
pub(crate) const FORMERR: u8 = 1;
pub(crate) const SERVFAIL: u8 = 2;
pub(crate) const NXDOMAIN: u8 = 3;
pub(crate) const NOTIMP: u8 = 4;
pub(crate) const REFUSED: u8 = 5;

/// Largest reply over UDP without EDNS.
pub(crate) const UDP_MAX: usize = 512;

/// TTL of local answers (Docker's embedded DNS uses 600 s).
const TTL: u32 = 600;

const HEADER_LEN: usize = 12;

/// A parsed standard query with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    /// The transaction id.
    pub id: u16,
    /// Whether the client asked for recursion (copied into the reply).
    pub recursion_desired: bool,
    /// The queried name, lower-case, without the trailing dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// End of the question section in the original message.
    question_end: usize,
}

/// Why a message could not be answered as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Too short to even carry a header: drop it.
    Unanswerable,
    /// A header we can reply to with this response code.
    Reply(u8),
}

/// Reads a standard query. Responses, other opcodes and multi-question messages are refused.
pub(crate) fn parse_query(msg: &[u8]) -> Result<Query, Malformed> {
    if msg.len() < HEADER_LEN {
        return Err(Malformed::Unanswerable);
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & 0x8000 != 0 {
        // A response sent to us: never answer, or two servers could loop.
        return Err(Malformed::Unanswerable);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(Malformed::Reply(NOTIMP));
    }
    if u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return Err(Malformed::Reply(FORMERR));
    }
    let mut pos = HEADER_LEN;
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(Malformed::Reply(FORMERR))? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        // Compression pointers (0xC0) and the reserved label types have no place in a question.
        if len > 63 {
            return Err(Malformed::Reply(FORMERR));
        }
        let label = msg.get(pos..pos + len).ok_or(Malformed::Reply(FORMERR))?;
        total += len + 1;
        if total > 255 {
            return Err(Malformed::Reply(FORMERR));
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
    let fixed = msg.get(pos..pos + 4).ok_or(Malformed::Reply(FORMERR))?;
    Ok(Query {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        recursion_desired: flags & 0x0100 != 0,
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        question_end: pos + 4,
    })
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// An address (A or AAAA by family).
    Addr(IpAddr),
    /// A PTR target name.
    Ptr(String),
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn encode_record(record: &Record) -> Vec<u8> {
    // The owner name is always the question's: a pointer to offset 12.
    let mut out = vec![0xc0, 0x0c];
    let (rtype, rdata) = match record {
        Record::Addr(IpAddr::V4(ip)) => (TYPE_A, ip.octets().to_vec()),
        Record::Addr(IpAddr::V6(ip)) => (TYPE_AAAA, ip.octets().to_vec()),
        Record::Ptr(name) => {
            let mut data = Vec::new();
            encode_name(name, &mut data);
            (TYPE_PTR, data)
        }
    };
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&TTL.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

/// An authoritative reply to `query` (whose raw bytes are `msg`) with `records`, truncated
/// (TC set) to fit `max_len`.
pub(crate) fn reply(
    msg: &[u8],
    query: &Query,
    rcode: u8,
    records: &[Record],
    max_len: usize,
) -> Vec<u8> {
    let mut out = header(query.id, query.recursion_desired, rcode, true);
    out[5] = 1; // QDCOUNT
    out.extend_from_slice(&msg[HEADER_LEN..query.question_end]);
    let mut count: u16 = 0;
    for record in records {
        let encoded = encode_record(record);
        if out.len() + encoded.len() > max_len {
            out[2] |= 0x02; // TC
            break;
        }
        out.extend_from_slice(&encoded);
        count += 1;
    }
    out[6..8].copy_from_slice(&count.to_be_bytes());
    out
}

/// A bare error reply (no question echoed) for a message we could only read the header of.
pub(crate) fn error_reply(msg: &[u8], rcode: u8) -> Vec<u8> {
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    header(id, msg[2] & 0x01 != 0, rcode, false)
}

fn header(id: u16, recursion_desired: bool, rcode: u8, authoritative: bool) -> Vec<u8> {
    let mut flags: u16 = 0x8000 | 0x0080 | u16::from(rcode & 0xf); // QR, RA
    if authoritative {
        flags |= 0x0400;
    }
    if recursion_desired {
        flags |= 0x0100;
    }
    let mut out = Vec::with_capacity(UDP_MAX);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// The address a reverse-lookup name stands for (`4.3.2.1.in-addr.arpa` → 1.2.3.4, and
/// 32-nibble `ip6.arpa` names).
pub(crate) fn reverse_name_to_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = rest
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [d, c, b, a] = <[u8; 4]>::try_from(octets).ok()?;
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| {
            if p.len() == 1 {
                u8::from_str_radix(p, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query as a stub resolver would send it.
    pub(crate) fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut msg = id.to_be_bytes().to_vec();
        msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        encode_name(name, &mut msg);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&CLASS_IN.to_be_bytes());
        msg
    }

    #[test]
    fn queries_parse_case_insensitively() {
        let msg = query_bytes(0x1234, "Web.App.", TYPE_AAAA);
        let q = parse_query(&msg).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype, q.qclass),
            (0x1234, "web.app", TYPE_AAAA, CLASS_IN)
        );
        assert!(q.recursion_desired);
        assert_eq!(q.question_end, msg.len());
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(parse_query(&[0; 5]), Err(Malformed::Unanswerable));
        let mut response = query_bytes(1, "a", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(Malformed::Unanswerable));
        let mut update = query_bytes(1, "a", TYPE_A);
        update[2] |= 5 << 3;
        assert_eq!(parse_query(&update), Err(Malformed::Reply(NOTIMP)));
        let mut two = query_bytes(1, "a", TYPE_A);
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(Malformed::Reply(FORMERR)));
        let truncated = &query_bytes(1, "abc", TYPE_A)[..14];
        assert_eq!(parse_query(truncated), Err(Malformed::Reply(FORMERR)));
        let mut pointer = query_bytes(1, "a", TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer), Err(Malformed::Reply(FORMERR)));
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(
            parse_query(&query_bytes(1, &long, TYPE_A)),
            Err(Malformed::Reply(FORMERR))
        );
        let err = error_reply(&two, FORMERR);
        assert_eq!(
            (err[0], err[1], err[3] & 0xf, err.len()),
            (0, 1, FORMERR, 12)
        );
    }

    #[test]
    fn replies_carry_the_question_and_answers() {
        let msg = query_bytes(7, "db", TYPE_A);
        let q = parse_query(&msg).unwrap();
        let out = reply(
            &msg,
            &q,
            NOERROR,
            &[
                Record::Addr("10.0.0.2".parse().unwrap()),
                Record::Addr("10.0.0.3".parse().unwrap()),
            ],
            UDP_MAX,
        );
        assert_eq!(&out[0..2], &[0, 7]);
        assert_eq!(out[2] & 0x80, 0x80, "QR");
        assert_eq!(out[2] & 0x04, 0x04, "AA");
        assert_eq!(out[2] & 0x01, 0x01, "RD copied");
        assert_eq!(out[3] & 0x8f, 0x80, "RA, NOERROR");
        assert_eq!(&out[4..8], &[0, 1, 0, 2]);
        assert_eq!(&out[12..msg.len()], &msg[12..]);
        let first = &out[msg.len()..msg.len() + 16];
        assert_eq!(
            first,
            &[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4, 10, 0, 0, 2]
        );

        let ptr = reply(&msg, &q, NOERROR, &[Record::Ptr("web.".into())], UDP_MAX);
        assert_eq!(&ptr[msg.len() + 2..msg.len() + 4], &[0, 12]);
        assert_eq!(&ptr[msg.len() + 10..], &[0, 5, 3, b'w', b'e', b'b', 0]);

        let nx = reply(&msg, &q, NXDOMAIN, &[], UDP_MAX);
        assert_eq!((nx[3] & 0xf, &nx[6..8]), (NXDOMAIN, &[0u8, 0][..]));
    }

    #[test]
    fn oversized_replies_are_truncated() {
        let msg = query_bytes(7, "many", TYPE_A);
        let q = parse_query(&msg).unwrap();
        let records: Vec<Record> = (0..100u8)
            .map(|i| Record::Addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))))
            .collect();
        let out = reply(&msg, &q, NOERROR, &records, UDP_MAX);
        assert!(out.len() <= UDP_MAX);
        assert_eq!(out[2] & 0x02, 0x02, "TC");
        let count = u16::from_be_bytes([out[6], out[7]]) as usize;
        assert_eq!(out.len(), msg.len() + count * 16);
        let full = reply(&msg, &q, NOERROR, &records, 65535);
        assert_eq!(u16::from_be_bytes([full[6], full[7]]), 100);
    }

    #[test]
    fn reverse_names_map_to_addresses() {
        assert_eq!(
            reverse_name_to_ip("2.0.213.10.in-addr.arpa"),
            Some("10.213.0.2".parse().unwrap())
        );
        assert_eq!(reverse_name_to_ip("0.213.10.in-addr.arpa"), None);
        assert_eq!(reverse_name_to_ip("x.0.213.10.in-addr.arpa"), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_name_to_ip(v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(reverse_name_to_ip("1.0.ip6.arpa"), None);
        assert_eq!(reverse_name_to_ip("example.com"), None);
    }
}
