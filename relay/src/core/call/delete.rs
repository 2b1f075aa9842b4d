//! What a `delete` names in a call (docs/behaviour.md §4a): the whole call, a branch, a fork that
//! never
//! became the dialog, or a dialog and everything its from-tag's party talks to.

use super::{Call, PartyId};
use crate::core::command::DeleteCommand;

/// The parties a `delete` ends.
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteTargets {
    /// No from-tag: the whole call.
    Call,
    /// These parties (and the call, if fewer than two are left).
    Parties(Vec<PartyId>),
    /// An old alias of a shared answering side (a fork that gave up): only the tag went, which
    /// [`Call::delete_targets`] did already.
    AliasOnly,
    /// The tags name nothing in this call.
    NotFound,
}

impl Call {
    /// Resolves the tags of a `delete`. Removes an alias tag when that is all the delete ends.
    pub fn delete_targets(&mut self, cmd: &DeleteCommand) -> DeleteTargets {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let Some(from) = nonempty(&cmd.from_tag) else {
            return DeleteTargets::Call;
        };
        let Some(f) = self.by_tag(&from) else {
            return DeleteTargets::NotFound;
        };
        let branch = nonempty(&cmd.via_branch).and_then(|b| self.by_branch(&b));
        let to = nonempty(&cmd.to_tag).and_then(|t| self.by_tag(&t).map(|p| (t, p)));
        if let Some(p) = branch {
            return DeleteTargets::Parties(vec![p]);
        }
        if nonempty(&cmd.via_branch).is_some() && to.is_none() {
            // A branch that is gone, and no to-tag to fall back on.
            return DeleteTargets::NotFound;
        }
        let Some((t, p)) = to else {
            return DeleteTargets::Parties(self.partners(f));
        };
        let party = self.party_mut(p).expect("live");
        if party.tags.len() > 1 && party.tag() != Some(t.as_str()) {
            // An old alias of a shared answering side (a fork that gave up): only the tag goes,
            // the side stays for the fork that answered.
            party.tags.retain(|x| *x != t);
            return DeleteTargets::AliasOnly;
        }
        if self.party(f).is_some_and(|fp| fp.peer == Some(p)) {
            // The dialog between them ends (a BYE): the from-tag's party and everything it
            // talks to, as without a to-tag.
            DeleteTargets::Parties(self.partners(f))
        } else {
            // A fork that never became the dialog.
            DeleteTargets::Parties(vec![p])
        }
    }

    /// A party and the parties it talks to: its peer, the one that offered to it, and those it
    /// offered to or that send to it.
    pub fn partners(&self, f: PartyId) -> Vec<PartyId> {
        let mut set = vec![f];
        if let Some(fp) = self.party(f) {
            set.extend(fp.peer);
            set.extend(fp.incoming.as_ref().map(|o| o.offerer));
        }
        set.extend(
            self.live()
                .filter(|(_, p)| {
                    p.incoming.as_ref().is_some_and(|o| o.offerer == f) || p.peer == Some(f)
                })
                .map(|(id, _)| id),
        );
        set.sort();
        set.dedup();
        set
    }
}
