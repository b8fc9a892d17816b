// A capture as network frames, for `mailtap export pcap` (pcap_export.hpp): each leg of the
// session (client <-> mailtap, mailtap <-> upstream) becomes a synthesized TCP connection
// over IPv4 or IPv6 in Ethernet frames, with a handshake, the recorded bytes in order with
// continuous sequence and acknowledgement numbers, and a FIN exchange, at the recorded times.
// A leg secured with STARTTLS continues in a second connection (a new client port): the
// capture holds the decrypted bytes, and Wireshark would read what follows a STARTTLS in
// the same connection as TLS records. Pure: no I/O.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "captures/reader.hpp"

namespace mailtap::captures {

struct frame {
  std::int64_t unix_us = 0;   // when it was seen: the capture's start plus the record's t_us
  std::string bytes;          // the whole Ethernet frame
};

struct pcap_options {
  // Keep the server side's recorded ports. Off: a server port other than 25 or 587 is
  // written as 25, the port Wireshark's SMTP dissector reads (the recorded ports are in the capture).
  bool keep_ports = false;
};

// TCP payload per frame: below the 65535-byte IPv4 total length and IPv6 payload length.
inline constexpr std::size_t max_segment_bytes = 65000;

std::vector<frame> synthesize_frames(const capture& c, const pcap_options& options = {});

}  // namespace mailtap::captures
