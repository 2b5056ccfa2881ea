// Which provider sender serves which channel type. A type without one cannot send, and POST
// /messages says so up front.
import type { ChannelType } from '../db/channels.sql.ts';
import type { ProviderSender } from './sender.ts';
import { wahaSender } from './waha.client.ts';
import { cloudSender } from './cloud.client.ts';

const SENDERS: Partial<Record<ChannelType, ProviderSender>> = { waha: wahaSender, whatsapp_cloud: cloudSender };

export function senderFor(type: ChannelType): ProviderSender | undefined {
  return SENDERS[type];
}
