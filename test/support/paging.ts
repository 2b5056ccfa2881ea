// Following a list's cursors to the end, for tests of the query functions (the HTTP lists have
// walkPages in test/http/read-api-harness.ts).

/** Every item in the order served, how many pages, and the largest page. Stops after 100 pages. */
export async function walkCursor<T>(
  page: (cursor: string | undefined) => Promise<{ items: readonly T[]; next: string | null | undefined }>,
): Promise<{ items: T[]; pages: number; largest: number }> {
  const items: T[] = [];
  let cursor: string | undefined;
  let pages = 0;
  let largest = 0;
  do {
    const p = await page(cursor);
    items.push(...p.items);
    largest = Math.max(largest, p.items.length);
    cursor = p.next ?? undefined;
    pages++;
    if (pages > 100) throw new Error('pagination does not end');
  } while (cursor);
  return { items, pages, largest };
}
