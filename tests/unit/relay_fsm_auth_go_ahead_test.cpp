// An AUTH whose go-ahead (334) or outcome can never come, the upstream gone: the exchange is
// over (relay_fsm::abandon_auth_exchange), the client hears the relay's 421 and the session
// ends, and what the client pipelined behind AUTH, its responses as it sent them, is recorded
// masked as any AUTH response is (README "AUTH": every client line while an AUTH exchange is
// open is masked).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "protocol/relay_fsm.hpp"
#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {

using testing::HasSubstr;
using testing::Not;
using namespace playbook;

// AUTH PLAIN's response for alice / secret.
const std::string plain_response = "AGFsaWNlAHNlY3JldA==";

class AuthWithoutGoAhead : public testing::Test {
 protected:
  void SetUp() override {
    obs_ = std::make_unique<recording_observer>();
    fsm_ = std::make_unique<relay_fsm>(relay_options{}, obs_.get());
    fsm_->on_start(tick());
    fsm_->on_upstream_connected(tick());
    fsm_->on_upstream_bytes(tick(), banner);
    take();
  }
  void TearDown() override { check_session_end(*fsm_, *obs_, [this] { return tick(); }, [this] { return take(); }); }
  std::uint64_t tick() { return now_ += 1000; }
  // The actions, printed; what went to the client is kept in cl_.
  std::vector<std::string> take() {
    std::vector<std::string> out;
    for (const auto& a : fsm_->take_actions()) {
      if (const auto* s = std::get_if<send_bytes>(&a); s && s->to == leg::client) cl_ += s->bytes;
      out.push_back(to_string(a));
    }
    return out;
  }
  void client(std::string_view b) { fsm_->on_client_bytes(tick(), b); take(); }
  void upstream(std::string_view b) { fsm_->on_upstream_bytes(tick(), b); take(); }
  void upstream_closes() { fsm_->on_upstream_eof(tick()); take(); }
  // The client's bytes as recorded, masked ones as '*' (line ends kept).
  std::string recorded_client() const { return obs_->stream(leg::client, direction::in); }

  std::unique_ptr<recording_observer> obs_;
  std::unique_ptr<relay_fsm> fsm_;
  std::uint64_t now_ = 0;
  std::string cl_;
};

// b19b514's reset (flush_replies): AUTH pipelined behind EHLO, the upstream closes before it
// answers EHLO; EHLO gets the relay's 421 and AUTH's slot is dropped unanswered. With HEAD's
// relay_fsm.cpp the response was recorded in the clear.
TEST_F(AuthWithoutGoAhead, AResponsePipelinedBehindAnAuthDroppedBehindEhloStaysMasked) {
  client("EHLO client.example\r\nAUTH PLAIN\r\n" + plain_response + "\r\n");
  upstream_closes();
  EXPECT_TRUE(fsm_->finished());
  EXPECT_EQ(cl_, banner + "421 4.4.2 mailtap upstream connection lost\r\n");
  EXPECT_THAT(obs_->everything(), Not(HasSubstr(plain_response)));
  EXPECT_EQ(recorded_client(), "EHLO client.example\r\nAUTH PLAIN\r\n" + std::string(plain_response.size(), '*') + "\r\n");
}

// f2eb076's reset (after_reply): AUTH itself gets the relay's 421.
TEST_F(AuthWithoutGoAhead, AResponsePipelinedBehindAnAuthAnswered421StaysMasked) {
  client("EHLO client.example\r\n");
  upstream(plain_ehlo_reply);
  client("AUTH PLAIN\r\n" + plain_response + "\r\n");
  upstream_closes();
  EXPECT_TRUE(fsm_->finished());
  EXPECT_THAT(cl_, testing::EndsWith("421 4.4.2 mailtap upstream connection lost\r\n"));
  EXPECT_THAT(obs_->everything(), Not(HasSubstr(plain_response)));
  EXPECT_EQ(recorded_client(), "EHLO client.example\r\nAUTH PLAIN\r\n" + std::string(plain_response.size(), '*') + "\r\n");
}

// Nothing behind the AUTH: the session ends as before, nothing masked that was not AUTH's.
TEST_F(AuthWithoutGoAhead, AnAuthAloneEndsTheSessionWithTheRelays421) {
  client("EHLO client.example\r\nAUTH LOGIN\r\n");
  upstream_closes();
  EXPECT_TRUE(fsm_->finished());
  EXPECT_EQ(recorded_client(), "EHLO client.example\r\nAUTH LOGIN\r\n");
}

}  // namespace
}  // namespace mailtap::protocol
