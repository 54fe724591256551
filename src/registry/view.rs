//! The registry's in-memory view at one version: the search index over every voiceprint, and
//! each artist's display name and authorized parties. It is built from the store at open and
//! kept in step through the store's change feed ([`View::apply`]), so one read of it answers a
//! whole screening ([`View::window_scores`], [`View::standings`]) at the version it reports.

use std::collections::{BTreeSet, HashMap};

use super::backend::{IndexChange, VersionedChange, ViewContents};
use super::index::SearchIndex;
use super::types::{ArtistStanding, RegistryError, ScoreQuery, Scored, Voiceprint};
use crate::scoring::asnorm::AsNorm;

/// What the view keeps of one artist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ArtistEntry {
    display_name: String,
    parties: BTreeSet<String>,
}

/// The search index, the artists with their authorized parties, and the registry version
/// they reflect.
pub(super) struct View {
    /// Every voiceprint.
    pub(super) index: SearchIndex,
    artists: HashMap<String, ArtistEntry>,
    /// Registry version of that content.
    pub(super) version: u64,
}

impl View {
    /// The view of `contents`, with an index of embeddings of length `dim`.
    pub(super) fn load(contents: ViewContents, dim: usize) -> Result<Self, RegistryError> {
        let mut index = SearchIndex::new(dim);
        for vp in &contents.voiceprints {
            check_dim(vp, dim)?;
            index.insert(&vp.voiceprint_id, &vp.artist_id, &vp.embedding);
        }
        let mut artists: HashMap<String, ArtistEntry> = contents
            .artists
            .into_iter()
            .map(|a| {
                let entry = ArtistEntry {
                    display_name: a.display_name,
                    parties: BTreeSet::new(),
                };
                (a.artist_id, entry)
            })
            .collect();
        for grant in contents.authorizations {
            artists
                .entry(grant.artist_id)
                .or_default()
                .parties
                .insert(grant.party_id);
        }
        Ok(Self {
            index,
            artists,
            version: contents.version,
        })
    }

    /// Numbers of artists and voiceprints.
    pub(super) fn size(&self) -> (u64, u64) {
        (self.artists.len() as u64, self.index.len() as u64)
    }

    /// Applies the `changes` newer than the view, in order.
    pub(super) fn apply(
        &mut self,
        changes: &[VersionedChange],
        dim: usize,
    ) -> Result<(), RegistryError> {
        for VersionedChange { version, change } in changes {
            if *version <= self.version {
                continue;
            }
            apply_to_index(&mut self.index, change, dim)?;
            self.apply_to_artists(change);
            self.version = *version;
        }
        Ok(())
    }

    /// What `change` does to the artists and their authorized parties.
    fn apply_to_artists(&mut self, change: &IndexChange) {
        match change {
            IndexChange::ArtistCreated {
                artist_id,
                display_name,
            } => {
                let entry = ArtistEntry {
                    display_name: display_name.clone().unwrap_or_default(),
                    parties: BTreeSet::new(),
                };
                self.artists.insert(artist_id.clone(), entry);
            }
            IndexChange::ArtistDeleted(artist_id) => {
                self.artists.remove(artist_id);
            }
            IndexChange::Granted {
                artist_id,
                party_id,
            } => {
                self.artists
                    .entry(artist_id.clone())
                    .or_default()
                    .parties
                    .insert(party_id.clone());
            }
            IndexChange::Revoked {
                artist_id,
                party_id,
            } => {
                if let Some(entry) = self.artists.get_mut(artist_id) {
                    entry.parties.remove(party_id);
                }
            }
            IndexChange::Enrolled(_) | IndexChange::VoiceprintDeleted(_) => {}
        }
    }

    /// Each window's artists with their best scores (see [`Scored::windows`]).
    pub(super) fn window_scores(&self, query: &ScoreQuery<'_>) -> Vec<Vec<(String, f32)>> {
        query
            .windows
            .iter()
            .map(|w| self.scores_of(w, query.top_k, query.as_norm))
            .collect()
    }

    /// Each artist's best score among the `top_k` voiceprints nearest to `window`, AS-Norm
    /// normalised when a cohort is given, best first.
    fn scores_of(
        &self,
        window: &[f32],
        top_k: usize,
        as_norm: Option<&AsNorm>,
    ) -> Vec<(String, f32)> {
        let Some(norm) = as_norm else {
            return self.index.top_artists(window, top_k);
        };
        let window_stats = norm.stats(window);
        let mut best: Vec<(String, f32)> = Vec::new();
        for hit in self.index.top_k(window, top_k) {
            let Some(voiceprint) = self.index.embedding(&hit.voiceprint_id) else {
                continue;
            };
            let score =
                AsNorm::normalize(f64::from(hit.score), norm.stats(voiceprint), window_stats)
                    as f32;
            match best.iter_mut().find(|(a, _)| *a == hit.artist_id) {
                Some((_, s)) => *s = s.max(score),
                None => best.push((hit.artist_id, score)),
            }
        }
        best.sort_by(|a, b| b.1.total_cmp(&a.1));
        best
    }

    /// The answer to `query` given its `windows` scores: the standing of every artist they
    /// name and of the query's registered `artist_ids`, at this view's version.
    pub(super) fn standings(
        &self,
        query: &ScoreQuery<'_>,
        windows: Vec<Vec<(String, f32)>>,
    ) -> Scored {
        let mut artists = HashMap::new();
        let named = windows.iter().flatten().map(|(id, _)| id);
        for id in named.chain(query.artist_ids) {
            if artists.contains_key(id) {
                continue;
            }
            if let Some(entry) = self.artists.get(id) {
                let standing = ArtistStanding {
                    display_name: entry.display_name.clone(),
                    party_authorized: entry.parties.contains(query.party_id),
                };
                artists.insert(id.clone(), standing);
            }
        }
        Scored {
            version: self.version,
            windows,
            artists,
        }
    }
}

/// Applies to `index`, at `version`, the `changes` newer than that, in order; returns the
/// version reached. A rebuilt index replays with this the changes made while it was built.
pub(super) fn replay(
    index: &mut SearchIndex,
    mut version: u64,
    changes: &[VersionedChange],
    dim: usize,
) -> Result<u64, RegistryError> {
    for VersionedChange {
        version: at,
        change,
    } in changes
    {
        if *at <= version {
            continue;
        }
        apply_to_index(index, change, dim)?;
        version = *at;
    }
    Ok(version)
}

/// What `change` does to the voiceprints of `index`.
fn apply_to_index(
    index: &mut SearchIndex,
    change: &IndexChange,
    dim: usize,
) -> Result<(), RegistryError> {
    match change {
        IndexChange::Enrolled(Some(vp)) => {
            check_dim(vp, dim)?;
            index.insert(&vp.voiceprint_id, &vp.artist_id, &vp.embedding);
        }
        IndexChange::VoiceprintDeleted(id) => {
            index.remove(id);
        }
        IndexChange::ArtistDeleted(id) => {
            index.remove_artist(id);
        }
        IndexChange::Enrolled(None)
        | IndexChange::ArtistCreated { .. }
        | IndexChange::Granted { .. }
        | IndexChange::Revoked { .. } => {}
    }
    Ok(())
}

fn check_dim(vp: &Voiceprint, dim: usize) -> Result<(), RegistryError> {
    if vp.embedding.len() != dim {
        return Err(RegistryError::Corrupt(format!(
            "voiceprint {} has {} dimensions, the model {dim}",
            vp.voiceprint_id,
            vp.embedding.len()
        )));
    }
    Ok(())
}
