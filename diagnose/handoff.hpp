// Proof of hand-off: the queue id a destination gives in its 2xx to the end of data, read
// from the common phrasings. Pure; thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::diagnose {

struct queue_id {
  std::string id;
  std::string_view vendor;   // whose phrasing matched: postfix, exim, microsoft, gmail, sendmail
};

// Postfix "Ok: queued as 4F2A1C3" (also mailtap's built-in sink), Exim "OK id=1qAbCd-0001Xy-Ab",
// Exchange / Microsoft 365 "<msgid> [InternalId=123456, Hostname=...] Queued mail for
// delivery", Gmail "OK  1700000000 a1-20020a05600c...- gsmtp", sendmail
// "2.0.0 3AB1cD2e012345 Message accepted for delivery". nullopt when none fits.
std::optional<queue_id> parse_queue_id(std::string_view text);

}  // namespace mailtap::diagnose
