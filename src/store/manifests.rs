//! The `storage_manifests` table: what each manifest blob of a registry's storage references,
//! so a storage walk reads each manifest once. Manifests are content-addressed, so a digest's
//! references never change; the walk that found them hands back the complete set it expanded,
//! and manifests no longer in the storage leave the table with that update. Not part of the
//! hash chain: a cache, rebuilt by reading the manifests again if it is lost.

use rusqlite::{Connection, params};
use std::collections::HashSet;

/// A sha256 digest as raw bytes.
pub type Sha256 = [u8; 32];

/// A manifest digest and the digests it references.
pub type ManifestRefs = (Sha256, Box<[Sha256]>);

/// One walk's manifests for the cache.
#[derive(Debug, Clone, Default)]
pub struct ManifestUpdate {
    pub registry: String,
    /// Every manifest the walk expanded: rows of others are deleted.
    pub present: Vec<Sha256>,
    /// Manifests read by the walk (not in the cache before), with their references.
    pub new: Vec<ManifestRefs>,
}

fn pack(refs: &[Sha256]) -> Vec<u8> {
    refs.iter().flatten().copied().collect()
}

fn unpack(blob: &[u8]) -> Option<Box<[Sha256]>> {
    if blob.len() % 32 != 0 {
        return None;
    }
    Some(
        blob.chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunk"))
            .collect(),
    )
}

/// Applies one walk's update in one transaction.
pub(super) fn apply(conn: &mut Connection, u: &ManifestUpdate) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let present: HashSet<&Sha256> = u.present.iter().collect();
    let stored: Vec<Vec<u8>> = {
        let mut stmt = tx.prepare("SELECT digest FROM storage_manifests WHERE registry = ?1")?;
        stmt.query_map(params![u.registry], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    {
        let mut delete =
            tx.prepare("DELETE FROM storage_manifests WHERE registry = ?1 AND digest = ?2")?;
        for d in stored {
            let keep = <&Sha256>::try_from(d.as_slice()).is_ok_and(|d| present.contains(d));
            if !keep {
                delete.execute(params![u.registry, d])?;
            }
        }
        let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO storage_manifests (registry, digest, refs) VALUES (?1, ?2, ?3)",
        )?;
        for (d, refs) in &u.new {
            insert.execute(params![u.registry, d.as_slice(), pack(refs)])?;
        }
    }
    tx.commit()
}

/// Every cached manifest of `registry`; rows that are not well-formed are skipped (the
/// manifest is read again).
pub(super) fn load(conn: &Connection, registry: &str) -> rusqlite::Result<Vec<ManifestRefs>> {
    let mut stmt =
        conn.prepare("SELECT digest, refs FROM storage_manifests WHERE registry = ?1")?;
    let rows = stmt.query_map(params![registry], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (d, refs) = row?;
        if let (Ok(d), Some(refs)) = (Sha256::try_from(d.as_slice()), unpack(&refs)) {
            out.push((d, refs));
        }
    }
    Ok(out)
}

/// The same statements for PostgreSQL.
pub(super) mod pg {
    use super::{ManifestRefs, ManifestUpdate, Sha256, pack, unpack};
    use postgres::{Client, GenericClient};
    use std::collections::HashSet;

    pub(in crate::store) fn apply(
        c: &mut Client,
        u: &ManifestUpdate,
    ) -> Result<(), postgres::Error> {
        let mut tx = c.transaction()?;
        let present: HashSet<&Sha256> = u.present.iter().collect();
        let stored: Vec<Vec<u8>> = tx
            .query(
                "SELECT digest FROM storage_manifests WHERE registry = $1",
                &[&u.registry],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let gone: Vec<Vec<u8>> = stored
            .into_iter()
            .filter(|d| !<&Sha256>::try_from(d.as_slice()).is_ok_and(|d| present.contains(d)))
            .collect();
        tx.execute(
            "DELETE FROM storage_manifests WHERE registry = $1 AND digest = ANY($2)",
            &[&u.registry, &gone],
        )?;
        let digests: Vec<&[u8]> = u.new.iter().map(|(d, _)| d.as_slice()).collect();
        let refs: Vec<Vec<u8>> = u.new.iter().map(|(_, r)| pack(r)).collect();
        tx.execute(
            "INSERT INTO storage_manifests (registry, digest, refs)
             SELECT $1, d, r FROM unnest($2::bytea[], $3::bytea[]) AS u(d, r)
             ON CONFLICT (registry, digest) DO UPDATE SET refs = excluded.refs",
            &[&u.registry, &digests, &refs],
        )?;
        tx.commit()
    }

    pub(in crate::store) fn load(
        c: &mut impl GenericClient,
        registry: &str,
    ) -> Result<Vec<ManifestRefs>, postgres::Error> {
        let rows = c.query(
            "SELECT digest, refs FROM storage_manifests WHERE registry = $1",
            &[&registry],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let d = Sha256::try_from(r.get::<_, &[u8]>(0)).ok()?;
                Some((d, unpack(r.get::<_, &[u8]>(1))?))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_walk_replaces_its_registrys_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::schema::open_for_writing(&dir.path().join("a.db")).unwrap();
        let (a, b, c, x, y) = ([1u8; 32], [2u8; 32], [3u8; 32], [8u8; 32], [9u8; 32]);
        let update =
            |registry: &str, present: Vec<Sha256>, new: Vec<ManifestRefs>| ManifestUpdate {
                registry: registry.into(),
                present,
                new,
            };
        apply(
            &mut conn,
            &update("r", vec![a, b], vec![(a, Box::new([x])), (b, Box::new([]))]),
        )
        .unwrap();
        apply(
            &mut conn,
            &update("other", vec![a], vec![(a, Box::new([y]))]),
        )
        .unwrap();
        apply(
            &mut conn,
            &update("r", vec![b, c], vec![(c, Box::new([x, y]))]),
        )
        .unwrap();
        let mut got = load(&conn, "r").unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![(b, Box::new([]) as Box<[Sha256]>), (c, Box::new([x, y]))]
        );
        assert_eq!(
            load(&conn, "other").unwrap(),
            vec![(a, Box::new([y]) as Box<[Sha256]>)]
        );
    }
}
