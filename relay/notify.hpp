// The service manager's readiness protocol (sd_notify(3), libsystemd): what the relay tells
// systemd under the packaged unit's Type=notify (packaging/mailtap.service). Each call is a
// no-op when $NOTIFY_SOCKET is unset (mailtap run from a shell or a test without one).
#pragma once
#include <string>

namespace mailtap::notify {

// READY=1 with a STATUS= line: the listeners are bound and accepting (or a reload is over).
void ready(const std::string& status);
// RELOADING=1 with MONOTONIC_USEC= (sd_notify(3)): a SIGHUP reload has started; ready()
// follows when it is over, whatever its outcome.
void reloading();
// STOPPING=1: a signal started the drain.
void stopping(const std::string& status);

}  // namespace mailtap::notify
