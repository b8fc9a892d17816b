// sd_notify(3) messages, one datagram each, to the socket systemd names in $NOTIFY_SOCKET.
#include "relay/notify.hpp"

#include <systemd/sd-daemon.h>

#include <chrono>
#include <string>

namespace mailtap::notify {

namespace {

// A STATUS= value is one line (sd_notify(3) reads the message line by line).
std::string one_line(std::string text) {
  for (auto& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

void send(const std::string& message) { (void)sd_notify(0, message.c_str()); }

}  // namespace

void ready(const std::string& status) { send("READY=1\nSTATUS=" + one_line(status)); }

void reloading() {
  // CLOCK_MONOTONIC, as systemd reads it: steady_clock is CLOCK_MONOTONIC on Linux.
  const auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(now_us));
}

void stopping(const std::string& status) { send("STOPPING=1\nSTATUS=" + one_line(status)); }

}  // namespace mailtap::notify
