// The fleet of bench 1 over StreamHeartbeats, in C++ (gRPC's asynchronous API, one thread on one completion
// queue): --streams MCs, each with its own
// stream, beating on a schedule (open loop) or as fast as answered (closed loop). Same arguments and one-line
// JSON as bench/heartbeat_client.py --streams; it exists because that Python client spends 350-520 µs of CPU
// per beat, more than the server under test, on the same two cores, and so falls behind the fleet's 2,700
// beats a second by itself (bench/RESULTS.md). This one spends a small fraction of that.
//
// Opening: every stream opens and sends one beat; the run starts once all are answered (the server has seen
// every member). Open loop (--rate R): beat k goes to stream order[k % streams] at start + k / R and is timed
// from that scheduled instant to its answer; a stream takes one write at a time, so a beat due while the last
// one is still being written waits its turn (and shows it in its latency). Closed loop (--rate 0): --in-flight
// streams each send their next beat when the last is answered. Prints "measuring" when the measured window
// starts, then the JSON; --trace FILE also writes each answered beat's start and latency. The bearer token
// comes from BENCH_TOKEN.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dark_tower/internal/v1/internal.grpc.pb.h"

namespace pb = dark_tower::internal::v1;
using Clock = std::chrono::steady_clock;

namespace {

const char* const kCodeNames[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

struct Options {
  std::string target;
  std::string prefix = "bench-mc";
  int count = 20000;
  int streams = 20000;
  int in_flight = 64;
  double rate = 0.0;
  int channels = 40;
  double duration = 15.0;
  double warmup = 3.0;
  unsigned seed = 1;
  std::string trace;
};

Clock::duration Span(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

class Recorder {
 public:
  void Start() {
    started_ = Clock::now();
    recording_ = true;
  }
  void Stop() {
    recording_ = false;
  }
  void Add(const std::string& code, double seconds, Clock::time_point scheduled) {
    if (!recording_) return;
    ++codes_[code];
    latencies_.push_back(seconds);
    if (tracing_) trace_.emplace_back(std::chrono::duration<double>(scheduled - started_).count(), seconds);
  }
  void Trace() { tracing_ = true; }
  // "<seconds since the start> <latency ms>" per answered beat, for finding when a run's slow beats happened.
  void WriteTrace(const std::string& path) const {
    FILE* out = std::fopen(path.c_str(), "w");
    if (out == nullptr) return;
    for (const auto& [at, seconds] : trace_) std::fprintf(out, "%.6f %.3f\n", at, seconds * 1000);
    std::fclose(out);
  }
  Clock::time_point started() const { return started_; }
  const std::map<std::string, long>& codes() const { return codes_; }
  const std::vector<double>& latencies() const { return latencies_; }

 private:
  bool recording_ = false;
  Clock::time_point started_;
  std::map<std::string, long> codes_;
  std::vector<double> latencies_;
  bool tracing_ = false;
  std::vector<std::pair<double, double>> trace_;
};

// One MC's stream on the completion queue. Everything runs on the one thread that polls the queue; a stream
// has at most one write and one read outstanding, and its tags say which (address + 0 / 1 / 2 / 3).
class BeatStream {
 public:
  enum Op { kStarted = 0, kWritten = 1, kRead = 2, kFinished = 3 };

  BeatStream(pb::GlobalControllerService::Stub* stub, grpc::CompletionQueue* queue,
             const pb::FastHeartbeatRequest& beat, const std::string& authorization) {
    *request_.mutable_fast() = beat;
    if (!authorization.empty()) context_.AddMetadata("authorization", authorization);
    call_ = stub->PrepareAsyncStreamHeartbeats(&context_, queue);
    call_->StartCall(Tag(kStarted));
  }

  void* Tag(Op op) { return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(this) | op); }
  static BeatStream* Of(void* tag) { return reinterpret_cast<BeatStream*>(reinterpret_cast<uintptr_t>(tag) & ~3); }
  static Op OpOf(void* tag) { return static_cast<Op>(reinterpret_cast<uintptr_t>(tag) & 3); }

  // Send one beat timed from `scheduled`; it waits behind a write in progress.
  void Beat(Clock::time_point scheduled, Recorder& recorder) {
    if (finished_) {
      recorder.Add(kCodeNames[status_.error_code()], 0.0, scheduled);
      return;
    }
    unanswered_.push_back(scheduled);
    if (writing_ || !started_) {
      ++queued_writes_;
      return;
    }
    Write();
  }

  void Close() {
    closing_ = true;
    if (!writing_ && started_ && !finished_) HalfClose();
  }

  // An event of this stream: returns true when the stream answered a beat.
  bool On(Op op, bool ok, Recorder& recorder) {
    switch (op) {
      case kStarted:
        if (!ok) return Finish();
        started_ = true;
        call_->Read(&response_, Tag(kRead));
        WriteNext();
        return false;
      case kWritten:
        writing_ = false;
        if (!ok) return false;  // the stream is gone: the outstanding read fails too, and finishes it
        WriteNext();
        return false;
      case kRead: {
        if (!ok) return Finish();
        const auto now = Clock::now();
        recorder.Add("OK", std::chrono::duration<double>(now - unanswered_.front()).count(), unanswered_.front());
        unanswered_.pop_front();
        call_->Read(&response_, Tag(kRead));
        return true;
      }
      case kFinished: {
        finished_ = true;
        const auto now = Clock::now();
        for (const auto& scheduled : unanswered_) {
          recorder.Add(kCodeNames[status_.error_code()], std::chrono::duration<double>(now - scheduled).count(),
                       scheduled);
        }
        unanswered_.clear();
        return false;
      }
    }
    return false;
  }

  bool finished() const { return finished_; }
  size_t unanswered() const { return finished_ ? 0 : unanswered_.size(); }

 private:
  // The stream may write again: the next waiting beat, or the end of its writes once closing.
  void WriteNext() {
    if (queued_writes_ > 0) {
      --queued_writes_;
      Write();
    } else if (closing_) {
      HalfClose();
    }
  }
  void Write() {
    writing_ = true;
    call_->Write(request_, Tag(kWritten));
  }
  void HalfClose() {
    if (half_closed_) return;
    half_closed_ = true;
    writing_ = true;
    call_->WritesDone(Tag(kWritten));
  }
  // The stream ended (it did not start, or the server closed it): ask for its status, once.
  bool Finish() {
    if (!finishing_) {
      finishing_ = true;
      call_->Finish(&status_, Tag(kFinished));
    }
    return false;
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<pb::HeartbeatStreamRequest, pb::HeartbeatStreamResponse>> call_;
  pb::HeartbeatStreamRequest request_;
  pb::HeartbeatStreamResponse response_;
  std::deque<Clock::time_point> unanswered_;
  int queued_writes_ = 0;
  bool started_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool half_closed_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

std::vector<pb::FastHeartbeatRequest> Beats(const Options& options) {
  std::mt19937 rng(options.seed);
  std::uniform_int_distribution<int> meetings(0, 100), participants(0, 1000);
  std::vector<pb::FastHeartbeatRequest> pool(options.count);
  char id[64];
  for (int index = 0; index < options.count; ++index) {
    std::snprintf(id, sizeof id, "%s-%06d", options.prefix.c_str(), index);
    auto& beat = pool[index];
    beat.set_controller_id(id);
    beat.set_health(pb::HEALTHY);
    auto* capacity = beat.mutable_capacity();
    capacity->set_max_meetings(100);
    capacity->set_current_meetings(meetings(rng));
    capacity->set_max_participants(1000);
    capacity->set_current_participants(participants(rng));
  }
  std::shuffle(pool.begin(), pool.end(), rng);
  return pool;
}

bool Parse(int argc, char** argv, Options& options) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--target") options.target = value;
    else if (flag == "--prefix") options.prefix = value;
    else if (flag == "--count") options.count = std::stoi(value);
    else if (flag == "--streams") options.streams = std::stoi(value);
    else if (flag == "--in-flight") options.in_flight = std::stoi(value);
    else if (flag == "--rate") options.rate = std::stod(value);
    else if (flag == "--channels") options.channels = std::stoi(value);
    else if (flag == "--duration") options.duration = std::stod(value);
    else if (flag == "--warmup") options.warmup = std::stod(value);
    else if (flag == "--seed") options.seed = static_cast<unsigned>(std::stoul(value));
    else if (flag == "--trace") options.trace = value;
    else return false;
  }
  return argc % 2 == 1 && !options.target.empty() && options.count >= 1 && options.streams >= 1 &&
         options.streams <= options.count && options.in_flight >= 1 && options.channels >= 1 &&
         options.rate >= 0 && options.duration > 0 && options.warmup >= 0;
}

// Nearest rank, as bench.common.percentile.
double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const size_t rank = std::max<size_t>(1, static_cast<size_t>(std::ceil(p / 100.0 * values.size())));
  return values[rank - 1];
}

std::string Number(double value) { return std::isnan(value) ? "NaN" : std::to_string(value); }

}  // namespace

int main(int argc, char** argv) {
  Options options;
  bool parsed = false;
  try {
    parsed = Parse(argc, argv, options);
  } catch (const std::exception&) {
  }
  if (!parsed) {
    std::fprintf(stderr, "usage: stream_client --target HOST:PORT [--prefix P] [--count N] [--streams N] "
                         "[--in-flight N] [--rate R] [--channels N] [--duration S] [--warmup S] [--seed N] "
                         "[--trace FILE]\n");
    return 2;
  }
  const char* token = std::getenv("BENCH_TOKEN");
  const std::string authorization = token && *token ? std::string("Bearer ") + token : "";

  std::vector<std::unique_ptr<pb::GlobalControllerService::Stub>> stubs;
  for (int i = 0; i < options.channels; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("grpc.use_local_subchannel_pool", 1);  // one connection per channel
    auto channel = grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), arguments);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
      std::fprintf(stderr, "could not connect to %s\n", options.target.c_str());
      return 1;
    }
    stubs.push_back(pb::GlobalControllerService::NewStub(channel));
  }

  Recorder recorder;
  if (!options.trace.empty()) recorder.Trace();
  grpc::CompletionQueue queue;
  const auto beats = Beats(options);
  std::vector<std::unique_ptr<BeatStream>> streams;
  streams.reserve(options.streams);
  for (int index = 0; index < options.streams; ++index) {
    streams.push_back(std::make_unique<BeatStream>(stubs[index % stubs.size()].get(), &queue, beats[index],
                                                   authorization));
    streams.back()->Beat(Clock::now(), recorder);
  }
  bool chaining = false;
  Clock::time_point until = Clock::time_point::max();
  // Take the queue's events until `deadline`: answers, finished writes, ended streams.
  auto poll = [&](Clock::time_point deadline) {
    void* tag;
    bool ok;
    while (true) {
      const auto status = queue.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + (deadline - Clock::now()));
      if (status != grpc::CompletionQueue::GOT_EVENT) return;
      BeatStream* stream = BeatStream::Of(tag);
      if (stream->On(BeatStream::OpOf(tag), ok, recorder) && chaining) {
        const auto now = Clock::now();
        if (now < until) stream->Beat(now, recorder);
      }
    }
  };
  auto outstanding = [&] {
    size_t total = 0;
    for (auto& stream : streams) total += stream->unanswered();
    return total;
  };
  while (outstanding() > 0) poll(Clock::now() + std::chrono::milliseconds(50));
  poll(Clock::now() + Span(options.warmup));

  recorder.Start();
  std::printf("measuring\n");
  std::fflush(stdout);
  const auto start = recorder.started();
  until = start + Span(options.duration);
  if (options.rate > 0) {
    std::vector<int> order(options.streams);
    for (int index = 0; index < options.streams; ++index) order[index] = index;
    std::shuffle(order.begin(), order.end(), std::mt19937(options.seed));
    for (long sent = 0;; ++sent) {
      const auto scheduled = start + Span(sent / options.rate);
      if (scheduled >= until) break;
      poll(scheduled);
      streams[order[sent % options.streams]]->Beat(scheduled, recorder);
    }
  } else {
    chaining = true;
    for (int index = 0; index < std::min(options.in_flight, options.streams); ++index) {
      streams[index]->Beat(start, recorder);
    }
    poll(until);
  }
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  while (outstanding() > 0 && Clock::now() < give_up) poll(Clock::now() + std::chrono::milliseconds(5));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  recorder.Stop();
  chaining = false;
  for (auto& stream : streams) stream->Close();
  const auto closed_by = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < closed_by &&
         !std::all_of(streams.begin(), streams.end(), [](auto& stream) { return stream->finished(); })) {
    poll(Clock::now() + std::chrono::milliseconds(50));
  }
  queue.Shutdown();
  void* drained;
  bool drained_ok;
  while (queue.Next(&drained, &drained_ok)) {
  }

  if (!options.trace.empty()) recorder.WriteTrace(options.trace);
  long calls = 0, ok = 0;
  std::string codes;
  for (const auto& [name, number] : recorder.codes()) {
    calls += number;
    if (name == "OK") ok = number;
    codes += (codes.empty() ? "\"" : ", \"") + name + "\": " + std::to_string(number);
  }
  const auto& latencies = recorder.latencies();
  std::printf(
      "{\"calls\": %ld, \"ok\": %ld, \"codes\": {%s}, \"seconds\": %f, \"rate\": %f, \"p50_ms\": %s, "
      "\"p99_ms\": %s, \"p999_ms\": %s, \"mode\": \"%s\", \"in_flight\": %d, \"target_rate\": %f, "
      "\"streams\": %d}\n",
      calls, ok, codes.c_str(), seconds, ok / seconds, Number(Percentile(latencies, 50) * 1000).c_str(),
      Number(Percentile(latencies, 99) * 1000).c_str(), Number(Percentile(latencies, 99.9) * 1000).c_str(),
      options.rate > 0 ? "open" : "closed", options.in_flight, options.rate, options.streams);
  return 0;
}
