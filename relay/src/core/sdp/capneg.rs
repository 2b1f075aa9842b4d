//! RFC 5939 SDP capability negotiation: `a=tcap`, `a=acap`, `a=pcfg` (offers), `a=acfg` (answers).
//! Parsed leniently (real peers put `a=` before `t=`, keep `|` alternatives in answers); written in
//! the RFC's form.

/// `a=tcap:<first> <proto> <proto>...`: numbers `first`, `first+1`, ... name the protocols.
pub fn parse_tcap(value: &str) -> Option<(u32, Vec<&str>)> {
    let mut it = value.split_ascii_whitespace();
    let first = it.next()?.parse().ok()?;
    let protos: Vec<&str> = it.collect();
    (!protos.is_empty()).then_some((first, protos))
}

/// `a=acap:<n> <attribute>`: the capability number and the attribute text (without `a=`).
pub fn parse_acap(value: &str) -> Option<(u32, &str)> {
    let (n, attr) = value.split_once(' ')?;
    Some((n.parse().ok()?, attr.trim_start()))
}

/// One attribute capability reference inside a configuration, `[n]` marking it optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcapRef {
    /// The `acap` number.
    pub number: u32,
    /// Written as `[n]`.
    pub optional: bool,
}

/// A potential (`pcfg`) or accepted (`acfg`) configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The configuration number (lower is preferred).
    pub number: u32,
    /// `t=` alternatives: tcap numbers, in order.
    pub transports: Vec<u32>,
    /// `a=` alternatives, each a list of acaps used together.
    pub attributes: Vec<Vec<AcapRef>>,
}

/// Transports one `a=pcfg` line may list (more are ignored).
pub const MAX_TRANSPORTS: usize = 8;
/// Alternatives (`|`) one `a=pcfg` line may list (more are ignored).
pub const MAX_ALTERNATIVES: usize = 16;
/// Attribute references one alternative may list (more are ignored).
pub const MAX_REFS: usize = 8;

/// Parses the value of `a=pcfg:` or `a=acfg:`. `t=` and `a=` may come in either order; other
/// parameters (`m=`, extensions) are skipped; a leading `-` (delete attributes) is ignored.
/// Lists longer than the bounds above are cut (docs/behaviour.md §9).
pub fn parse_config(value: &str) -> Option<Config> {
    let mut it = value.split_ascii_whitespace();
    let mut cfg = Config {
        number: it.next()?.parse().ok()?,
        ..Config::default()
    };
    for param in it {
        if let Some(t) = param.strip_prefix("t=") {
            cfg.transports = t
                .split('|')
                .take(MAX_TRANSPORTS)
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
        } else if let Some(a) = param.strip_prefix("a=") {
            let a = a.strip_prefix('-').unwrap_or(a);
            cfg.attributes = a
                .split('|')
                .take(MAX_ALTERNATIVES)
                .map(|alt| {
                    alt.split(',')
                        .take(MAX_REFS)
                        .map(|r| {
                            let (inner, optional) =
                                match r.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                                    Some(inner) => (inner, true),
                                    None => (r, false),
                                };
                            Some(AcapRef {
                                number: inner.parse().ok()?,
                                optional,
                            })
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .collect::<Option<_>>()?;
        }
    }
    Some(cfg)
}

/// Writes `<cfg> t=<tcap> a=<acap>` (one chosen alternative each), as `pcfg`/`acfg` values.
pub fn write_config(number: u32, tcap: u32, acaps: &[u32]) -> String {
    let list: Vec<String> = acaps.iter().map(u32::to_string).collect();
    format!("{number} t={tcap} a={}", list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc5939_example_and_linphone_order() {
        assert_eq!(
            parse_tcap("1 RTP/SAVPF RTP/SAVP RTP/AVPF"),
            Some((1, vec!["RTP/SAVPF", "RTP/SAVP", "RTP/AVPF"]))
        );
        assert_eq!(parse_acap("2 rtcp-fb:0 nack"), Some((2, "rtcp-fb:0 nack")));
        let c = parse_config("1 t=1 a=1,[2]").unwrap();
        assert_eq!(c.transports, vec![1]);
        assert_eq!(
            c.attributes,
            vec![vec![
                AcapRef {
                    number: 1,
                    optional: false
                },
                AcapRef {
                    number: 2,
                    optional: true
                }
            ]]
        );
        let linphone = parse_config("1 a=1|2 t=1").unwrap();
        assert_eq!(linphone.transports, vec![1]);
        assert_eq!(linphone.attributes.len(), 2);
        assert!(parse_config("3 a=[2]").unwrap().attributes[0][0].optional);
        assert_eq!(parse_config("x t=1"), None);
        assert_eq!(parse_config("1 t=1|y"), None);
        assert_eq!(write_config(1, 1, &[2]), "1 t=1 a=2");
    }
}
