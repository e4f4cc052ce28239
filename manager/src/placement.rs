//! Placement of roles by label selector: which hosts get the roles when a
//! request says `host_selector` and `count` instead of `host_id`. A pure
//! function of the candidate hosts, so the rules are tested with tables.
//!
//! Rules: only healthy hosts matching the selector are picked; hosts that run
//! no role of the service yet come first (spread), then hosts with the fewest
//! roles overall, then the lowest host id (deterministic). One request never
//! puts two of its roles on the same host. Picks made earlier in the same
//! request body count, so a bulk request spreads as a sequence of calls would.

use std::collections::BTreeMap;

use drover_proto::labels::Selector;

use crate::model::HostStatus;

/// A host as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub hostname: String,
    pub status: HostStatus,
    pub labels: BTreeMap<String, String>,
    /// Roles of the service being placed that the host runs.
    pub service_roles: u32,
    /// Roles of every service that the host runs.
    pub total_roles: u32,
}

/// Too few usable hosts match a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooFew {
    pub needed: usize,
    pub selector: String,
    /// Matching hosts that are not decommissioned, by hostname, with status.
    pub matching: Vec<(String, HostStatus)>,
}

impl TooFew {
    /// `needs 3 hosts matching zk=true; 2 match (node-1, node-2), 1 of them is lost`.
    pub fn describe(&self) -> String {
        let n = self.matching.len();
        let mut out = format!(
            "needs {} host{} matching {}; {n} match{}",
            self.needed,
            if self.needed == 1 { "" } else { "s" },
            if self.selector.is_empty() { "(any labels)" } else { &self.selector },
            if n == 1 { "es" } else { "" },
        );
        if n > 0 {
            const SHOWN: usize = 10;
            let names: Vec<&str> = self.matching.iter().take(SHOWN).map(|(h, _)| h.as_str()).collect();
            out.push_str(&format!(" ({}{})", names.join(", "), if n > SHOWN { ", ..." } else { "" }));
            let lost = self.matching.iter().filter(|(_, s)| *s == HostStatus::Lost).count();
            if lost > 0 {
                out.push_str(&format!(", {lost} of them {} lost", if lost == 1 { "is" } else { "are" }));
            }
        }
        out
    }
}

/// Candidate hosts and the roles they run, updated as roles are placed.
#[derive(Debug, Default)]
pub struct Placement {
    hosts: Vec<Candidate>,
}

impl Placement {
    pub fn new(mut hosts: Vec<Candidate>) -> Placement {
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        Placement { hosts }
    }

    /// Records a role placed on `host_id` (explicitly or by [`Placement::pick`]).
    pub fn record(&mut self, host_id: &str) {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.id == host_id) {
            h.service_roles += 1;
            h.total_roles += 1;
        }
    }

    /// Picks `count` distinct healthy hosts matching `selector` and records a
    /// role on each. On failure nothing is recorded.
    pub fn pick(&mut self, selector: &Selector, count: usize) -> Result<Vec<String>, TooFew> {
        let matching: Vec<&Candidate> = self
            .hosts
            .iter()
            .filter(|h| h.status != HostStatus::Decommissioned && selector.matches(&h.labels))
            .collect();
        let mut usable: Vec<&Candidate> =
            matching.iter().copied().filter(|h| h.status == HostStatus::Healthy).collect();
        if usable.len() < count {
            let mut listed: Vec<(String, HostStatus)> =
                matching.iter().map(|h| (h.hostname.clone(), h.status)).collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            return Err(TooFew { needed: count, selector: selector.to_string(), matching: listed });
        }
        usable.sort_by(|a, b| {
            (a.service_roles > 0, a.total_roles, &a.id).cmp(&(b.service_roles > 0, b.total_roles, &b.id))
        });
        let picked: Vec<String> = usable.into_iter().take(count).map(|h| h.id.clone()).collect();
        for id in &picked {
            self.record(id);
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use drover_proto::labels::parse_selector;

    use super::*;

    fn host(id: &str, status: HostStatus, labels: &[(&str, &str)], service_roles: u32, total_roles: u32) -> Candidate {
        Candidate {
            id: id.into(),
            hostname: format!("node-{id}"),
            status,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            service_roles,
            total_roles,
        }
    }

    use HostStatus::{Decommissioned, Healthy, Lost};

    #[test]
    fn picks_spread_then_least_loaded_then_by_id() {
        let zk = [("zk", "true")];
        // (what, hosts, selector, count, picked)
        type Case<'a> = (&'a str, &'a [Candidate], &'a str, usize, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "by id when all equal",
                &[host("b", Healthy, &zk, 0, 0), host("a", Healthy, &zk, 0, 0)],
                "zk=true",
                1,
                &["a"],
            ),
            (
                "hosts without the service first",
                &[host("a", Healthy, &zk, 1, 1), host("b", Healthy, &zk, 0, 5)],
                "zk=true",
                1,
                &["b"],
            ),
            (
                "then fewest roles overall",
                &[host("a", Healthy, &zk, 0, 3), host("b", Healthy, &zk, 0, 1), host("c", Healthy, &zk, 0, 2)],
                "zk=true",
                2,
                &["b", "c"],
            ),
            (
                "lost, decommissioned and non-matching hosts are skipped",
                &[
                    host("a", Lost, &zk, 0, 0),
                    host("b", Decommissioned, &zk, 0, 0),
                    host("c", Healthy, &[], 0, 0),
                    host("d", Healthy, &zk, 2, 9),
                ],
                "zk=true",
                1,
                &["d"],
            ),
            (
                "inequality",
                &[host("a", Healthy, &[("zk", "true"), ("rack", "r1")], 0, 0), host("b", Healthy, &zk, 0, 0)],
                "zk=true,rack!=r1",
                1,
                &["b"],
            ),
        ];
        for (what, hosts, sel, count, want) in cases {
            let mut p = Placement::new(hosts.to_vec());
            let got = p.pick(&parse_selector(sel).unwrap(), *count).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn successive_picks_spread_over_hosts() {
        let zk = [("zk", "true")];
        let mut p = Placement::new(vec![
            host("a", Healthy, &zk, 0, 0),
            host("b", Healthy, &zk, 0, 0),
            host("c", Healthy, &zk, 0, 0),
        ]);
        let sel = parse_selector("zk=true").unwrap();
        p.record("a");
        assert_eq!(p.pick(&sel, 1).unwrap(), ["b"]);
        assert_eq!(p.pick(&sel, 1).unwrap(), ["c"]);
        // Every host runs one role of the service now: fewest overall, then id.
        assert_eq!(p.pick(&sel, 2).unwrap(), ["a", "b"]);
    }

    #[test]
    fn too_few_says_what_matches_and_what_is_lost() {
        let zk = [("zk", "true")];
        let mut p = Placement::new(vec![
            host("1", Healthy, &zk, 0, 0),
            host("2", Lost, &zk, 0, 0),
            host("3", Decommissioned, &zk, 0, 0),
            host("4", Healthy, &[], 0, 0),
        ]);
        let err = p.pick(&parse_selector("zk=true").unwrap(), 3).unwrap_err();
        assert_eq!(err.describe(), "needs 3 hosts matching zk=true; 2 match (node-1, node-2), 1 of them is lost");
        let err = p.pick(&parse_selector("zk=false").unwrap(), 1).unwrap_err();
        assert_eq!(err.describe(), "needs 1 host matching zk=false; 0 match");
        // A failed pick records nothing.
        assert_eq!(p.pick(&parse_selector("zk=true").unwrap(), 1).unwrap(), ["1"]);
    }
}
