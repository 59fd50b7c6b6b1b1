//! Long tables are shown a page at a time, so a page stays small however much is retained.

use std::ops::Range;

/// Rows per page of any table.
pub const PAGE_SIZE: usize = 100;

/// Where a table is in its rows, and the links to its neighbouring pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Pager {
    /// 1-based.
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    /// 1-based numbers of the first and last rows shown (0 when empty).
    pub first: usize,
    pub last: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// Page `requested` (clamped to what exists) of `total` rows; `href(n)` makes the link to
    /// page `n`.
    pub fn new(total: usize, requested: Option<usize>, href: impl Fn(usize) -> String) -> Self {
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        let page = requested.unwrap_or(1).clamp(1, pages);
        let first = if total == 0 {
            0
        } else {
            (page - 1) * PAGE_SIZE + 1
        };
        let last = (page * PAGE_SIZE).min(total);
        Self {
            page,
            pages,
            total,
            first,
            last,
            prev: (page > 1).then(|| href(page - 1)),
            next: (page < pages).then(|| href(page + 1)),
        }
    }

    /// Indices of the rows on this page.
    pub fn range(&self) -> Range<usize> {
        self.first.saturating_sub(1)..self.last
    }

    pub fn is_paged(&self) -> bool {
        self.pages > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_row_once_and_clamp() {
        let href = |n: usize| format!("?p={n}");
        let empty = Pager::new(0, Some(3), href);
        assert_eq!((empty.page, empty.pages, empty.range()), (1, 1, 0..0));
        assert!(empty.prev.is_none() && empty.next.is_none());

        let total = 2 * PAGE_SIZE + 5;
        let mut seen = 0;
        for n in 1..=3 {
            let p = Pager::new(total, Some(n), href);
            assert_eq!(p.range().start, seen);
            seen = p.range().end;
            assert_eq!(p.prev.is_some(), n > 1);
            assert_eq!(
                p.next.as_deref(),
                (n < 3).then(|| format!("?p={}", n + 1)).as_deref()
            );
        }
        assert_eq!(seen, total);
        let past = Pager::new(total, Some(99), href);
        assert_eq!(
            (past.page, past.first, past.last),
            (3, 2 * PAGE_SIZE + 1, total)
        );
        assert_eq!(Pager::new(total, Some(0), href).page, 1);
    }
}
