// Package fuseconn hands a FUSE connection from the process that mounted it
// (the privileged CSI node) to the process that serves it (an unprivileged
// sidecar), and lets a later server continue the same connection.
//
// # Why
//
// The kernel keeps a FUSE connection alive while any process holds a
// descriptor of it. The mounting process keeps its descriptor and offers a
// copy to whichever server asks; when that server crashes, is restarted or
// upgraded, the connection (and the mount the application uses) stays, and
// the next server continues it: it replays the INIT exchange to its own
// go-fuse server (see Attach) and asks the kernel, with FUSE_NOTIFY_RESEND,
// to send again the requests the previous server read but never answered.
//
// # Protocol
//
// The holder (Hold) listens on a SOCK_SEQPACKET unix socket named
// SocketName(volume) in a directory both sides see. Every message is one
// packet holding one JSON object of at most maxMessage bytes:
//
//	{"v":1, "type":"...", "volume":"<name>", "id":N, ...}
//
// v is the protocol version (a peer speaking another one is refused with a
// clear error), volume names the volume the message is about (a message
// for another volume is refused), id pairs a reply with its request. A
// descriptor travels in the packet's SCM_RIGHTS control message.
//
//	server -> holder  hello   {have_conn, init, status}     first packet of a connection
//	holder -> server  conn    {volume, init, clean} + fd     the holder's copy of the connection
//	holder -> server  adopt   {}                             the holder has none (it restarted): give yours
//	server -> holder  give    {volume, init} + fd            answer to adopt
//	server -> holder  init    {init}                         SaveInit; answered by ok
//	server -> holder  status  {status}                       Report; answered by ok
//	holder -> server  stats   {}                             answered by statsr {stats} or {error}
//	holder -> server  replaced {}                            a newer server connected; stop reconnecting
//	either            error   {error}                        the request failed; the text says why
//
// One server connection at a time: a newer one replaces the older (a
// restarted sidecar). A server whose connection to the holder breaks
// redials until it is closed, so a restarted holder gets the descriptor
// and the INIT exchange back (adoption). Every socket operation has a
// deadline; a peer that answers nothing, sends garbage, another version,
// or a packet without the descriptor it promised gets an error that says so.
package fuseconn
