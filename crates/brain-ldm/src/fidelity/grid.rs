//! Figure grids like the paper's: one row per requested covariate value, one column per
//! seed, each cell the three orthogonal mid-slices of one generated brain.

use crate::output::GreyImage;

/// Pixels between cells.
const GAP: usize = 2;
/// Grey level of the lines between cells (the brains' background is black).
const GAP_GREY: u8 = 128;

/// Cells are enlarged (nearest neighbour, by a whole factor) to at least this many rows, so
/// that coarse images (4 mm: 56 voxels) stay legible in a figure.
const MIN_CELL_HEIGHT: usize = 112;

/// `image` enlarged `factor` times along both axes by repeating pixels.
fn enlarge(image: &GreyImage, factor: usize) -> GreyImage {
    let width = image.width * factor;
    let pixels = (0..image.height * factor)
        .flat_map(|y| (0..width).map(move |x| (x / factor, y / factor)))
        .map(|(x, y)| image.pixels[y * image.width + x])
        .collect();
    GreyImage {
        width,
        height: image.height * factor,
        pixels,
    }
}

/// The cells `cells[row][column]` tiled into one image with [`GAP`]-pixel grey lines between
/// them, all enlarged by the whole factor that brings them to [`MIN_CELL_HEIGHT`] rows; a
/// missing cell stays black. Cells may differ in size: each slot is as large as the largest.
pub(crate) fn tile(cells: &[Vec<Option<GreyImage>>]) -> GreyImage {
    let tallest = cells.iter().flatten().flatten().map(|c| c.height).max();
    let factor = MIN_CELL_HEIGHT.div_ceil(tallest.unwrap_or(1).max(1));
    let cells: Vec<Vec<Option<GreyImage>>> = cells
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| c.as_ref().map(|c| enlarge(c, factor)))
                .collect()
        })
        .collect();
    let all = || cells.iter().flatten().flatten();
    let cell_w = all().map(|c| c.width).max().unwrap_or(0);
    let cell_h = all().map(|c| c.height).max().unwrap_or(0);
    let rows = cells.len();
    let cols = cells.iter().map(Vec::len).max().unwrap_or(0);
    let width = cols * cell_w + cols.saturating_sub(1) * GAP;
    let height = rows * cell_h + rows.saturating_sub(1) * GAP;
    let mut pixels = vec![GAP_GREY; width * height];
    for (r, row) in cells.iter().enumerate() {
        for c in 0..cols {
            let (x0, y0) = (c * (cell_w + GAP), r * (cell_h + GAP));
            for y in 0..cell_h {
                pixels[(y0 + y) * width + x0..(y0 + y) * width + x0 + cell_w].fill(0);
            }
            if let Some(Some(cell)) = row.get(c) {
                for y in 0..cell.height {
                    let dst = (y0 + y) * width + x0;
                    pixels[dst..dst + cell.width]
                        .copy_from_slice(&cell.pixels[y * cell.width..(y + 1) * cell.width]);
                }
            }
        }
    }
    GreyImage {
        width,
        height,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(v: u8, height: usize) -> Option<GreyImage> {
        Some(GreyImage {
            width: 3,
            height,
            pixels: (0..3 * height).map(|i| v + (i % 3) as u8).collect(),
        })
    }

    #[test]
    fn cells_are_placed_row_by_row_with_gaps() {
        let h = MIN_CELL_HEIGHT;
        let g = tile(&[vec![cell(10, h), cell(20, h)], vec![cell(30, h), None]]);
        assert_eq!((g.width, g.height), (3 + GAP + 3, h + GAP + h));
        let at = |x: usize, y: usize| g.pixels[y * g.width + x];
        assert_eq!((at(0, 0), at(2, 0)), (10, 12));
        assert_eq!(at(3, 0), GAP_GREY);
        assert_eq!(at(3 + GAP, 1), 20);
        assert_eq!(at(0, h + GAP), 30);
        assert_eq!(at(0, h), GAP_GREY);
        assert_eq!(at(3 + GAP + 2, h + GAP + 1), 0);
    }

    #[test]
    fn small_cells_are_enlarged_by_a_whole_factor() {
        // 40 rows → factor 3 (120 ≥ 112); each pixel becomes a 3 × 3 block.
        let g = tile(&[vec![cell(10, 40)]]);
        assert_eq!((g.width, g.height), (9, 120));
        assert_eq!(&g.pixels[..9], &[10, 10, 10, 11, 11, 11, 12, 12, 12]);
        assert_eq!(&g.pixels[2 * 9..3 * 9], &g.pixels[..9]);
    }
}
