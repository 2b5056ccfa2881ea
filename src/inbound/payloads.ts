// How inbound data is stored (JSON columns) and how it appears in event payloads. Pure functions,
// so the transaction in inbound.service.ts reads as the sequence of writes it is.
import type { ContactRecord } from '../db/contacts-read.sql.ts';
import type { AdAttribution as EventAd, ContactData, MessageData, MessageStatus as EventStatus } from '../domain/events.ts';
import {
  MESSAGE_STATUSES, compact, type AdAttribution, type InboundMessage, type MessageStatus,
} from '../domain/inbound.ts';

export type StoredMessage = {
  id: string;
  contactId: string;
  sessionId: string;
  channelId: string;
  status: string;
  media: Record<string, unknown> | null;
  location: Record<string, unknown> | null;
  contactCard: Record<string, unknown> | null;
};

export function mediaDoc(m: InboundMessage): Record<string, unknown> | null {
  if (!m.media) return null;
  const { url, mimetype, filename, mediaId, sha256 } = m.media;
  return compact({ url: url ?? null, mimetype: mimetype ?? null, filename: filename ?? null, media_id: mediaId, sha256 });
}

export function locationDoc(m: InboundMessage): Record<string, unknown> | null {
  if (!m.location) return null;
  const { latitude, longitude, name, address } = m.location;
  return { latitude, longitude, name: name ?? null, address: address ?? null };
}

export function contactCardDoc(m: InboundMessage): Record<string, unknown> | null {
  return m.contactCard ? { vcards: m.contactCard.vcards, display_name: m.contactCard.displayName ?? null } : null;
}

/** Ad attribution as stored on messages and contacts: the parser's fields, as given. */
export function adDoc(ad: AdAttribution | undefined): Record<string, unknown> | undefined {
  return ad ? { ...ad } : undefined;
}

/** The status a new message starts in: ours as the provider reported it, theirs received. */
export function initialStatus(m: InboundMessage): string {
  return m.fromMe ? (m.ackStatus ?? 'sent') : 'received';
}

const RANK: Record<string, number> = { pending: 0, sent: 1, delivered: 2, read: 3, played: 4 };

/** The step columns a status implies (reading a message means it was sent and delivered too). */
export function stepTimes(status: string, at: Date): { sentAt: Date | null; deliveredAt: Date | null; readAt: Date | null; playedAt: Date | null } {
  const r = RANK[status] ?? -1;
  return {
    sentAt: r >= 1 ? at : null,
    deliveredAt: r >= 2 ? at : null,
    readAt: r >= 3 ? at : null,
    playedAt: r >= 4 ? at : null,
  };
}

/** A stored status in the vocabulary of the status machine: 'queued' (not yet sent) is pending. */
export function machineStatus(stored: string): MessageStatus | null {
  if (stored === 'queued') return 'pending';
  return (MESSAGE_STATUSES as readonly string[]).includes(stored) ? (stored as MessageStatus) : null;
}

const s = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);

/** Stored attribution → the catalogue's ad fields. */
export function eventAd(ad: Record<string, unknown>): EventAd {
  const mediaType = s(ad.media_type);
  return {
    source_type: s(ad.source_type) ?? 'ad',
    source_id: s(ad.source_id),
    source_url: s(ad.source_url),
    headline: s(ad.headline),
    body: s(ad.body),
    media_type: mediaType,
    image_url: mediaType === 'image' ? s(ad.media_url) : null,
    video_url: mediaType === 'video' ? s(ad.media_url) : null,
    thumbnail_url: s(ad.thumbnail_url),
    ctwa_clid: s(ad.ctwa_clid),
  };
}

/** The catalogue payload of contact.created / contact.updated, whichever path changed the contact. */
export function contactData(c: ContactRecord): ContactData {
  return {
    contact_id: c.id,
    name: c.name,
    phone: c.phone,
    email: c.email,
    wa_id: c.waId,
    tags: c.tags,
    custom_fields: c.customFields,
    source: c.source,
    ad_attribution: c.adAttribution ? eventAd(c.adAttribution) : null,
  };
}

export function messageData(m: InboundMessage, stored: StoredMessage): MessageData {
  const media = stored.media as { url?: string | null; mimetype?: string | null; filename?: string | null } | null;
  return {
    message_id: stored.id,
    contact_id: stored.contactId,
    session_id: stored.sessionId,
    channel_id: stored.channelId,
    direction: m.fromMe ? 'outbound' : 'inbound',
    from_me: m.fromMe,
    type: m.type,
    text: m.text ?? null,
    media: media ? { url: media.url ?? null, mimetype: media.mimetype ?? null, filename: media.filename ?? null } : null,
    location: stored.location as MessageData['location'],
    contact_card: stored.contactCard,
    external_id: m.externalId,
    status: stored.status as EventStatus,
    timestamp: m.timestamp.toISOString(),
    reply_to_external_id: m.replyToExternalId ?? null,
  };
}
