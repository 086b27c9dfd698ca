// External memory model behind the engine's memory port (accelml.hdl.engine.layouts).
//
// Word-wide requests in order: a read returns the word LATENCY cycles after it is accepted (data
// as of acceptance, so reads and writes take effect in request order); a masked write takes
// effect when accepted and has no response. At most MAX_OUT reads are in flight (accepted, not yet
// taken by the engine). Bandwidth is a token bucket of BW_NUM / BW_DEN bytes per cycle: a request
// (read or write) is accepted only when a whole word's worth of credit is available; the bucket
// holds a word and one cycle's credit, so a stream of requests keeps every fraction of a word and
// sustains exactly BW_NUM / BW_DEN bytes per cycle (a one-word bucket would lose the remainder at
// every request: at 61 of 64 bytes a cycle, a word every other cycle).
// DRAM costs (accelml.sim.dram; all 0 for memory without them): one row of ROW_BYTES bytes is open;
// a request to another row opens it (the row it needs is activated the first cycle the request is
// presented) and waits PAGE_MISS cycles; a write is accepted RD2WR cycles after the last read at
// the earliest, a read WR2RD cycles after the last write. Refresh is in the bandwidth (BW_NUM /
// BW_DEN is the sustained bandwidth times the refresh efficiency). accelml.sim.cycles models the
// same gate cycle for cycle.
// With stall_mask non-zero, a 16-bit LFSR also withholds ready on requests and valid on a response
// not yet presented in the cycles where (lfsr & stall_mask) != 0: back-pressure for tests.
// The contents are loaded from "mem.bin" at time 0 ($fread: each word's bytes most significant
// first) and written to "mem_out.bin" (words [0, dump_words), "%u": each word's bytes least
// significant first, padded to a multiple of 4) on the rising edge of dump. Binary, not $readmemh /
// $writememh: a 37 MB image took 2.5 s more as hex.
`timescale 1ns/1ps
module accelml_memory_model #(
    parameter integer WBYTES = 8,
    parameter integer AW = 24,
    parameter integer WORDS = 1024,
    parameter integer LATENCY = 8,
    parameter integer MAX_OUT = 2,
    parameter integer BW_NUM = 8,
    parameter integer BW_DEN = 1,
    parameter integer ROW_BYTES = 0,
    parameter integer PAGE_MISS = 0,
    parameter integer RD2WR = 0,
    parameter integer WR2RD = 0
) (
    input clk,
    input req_valid,
    output req_ready,
    input [AW-1:0] req_addr,
    input req_write,
    input [8*WBYTES-1:0] req_data,
    input [WBYTES-1:0] req_mask,
    output resp_valid,
    input resp_ready,
    output [8*WBYTES-1:0] resp_data,
    input dump,
    input [63:0] dump_words,
    input [15:0] stall_mask
);
    reg [8*WBYTES-1:0] mem [0:WORDS-1];
    reg [8*WBYTES-1:0] q_data [0:MAX_OUT-1];
    reg [63:0] q_due [0:MAX_OUT-1];
    integer head = 0, tail = 0, count = 0;
    reg [63:0] now = 0;
    localparam [63:0] WORD_CREDIT = WBYTES * BW_DEN;
    localparam [63:0] CREDIT_CAP = WORD_CREDIT + BW_NUM;
    reg [63:0] credit = CREDIT_CAP;
    integer b, fd, loaded;
    reg [63:0] k;
    reg dumped = 0;

    initial begin
        fd = $fopen("mem.bin", "rb");
        if (fd != 0) begin
            loaded = $fread(mem, fd);
            $fclose(fd);
        end
    end

    reg [15:0] lfsr = 16'hACE1;
    reg presented = 0;
    wire stall_req = (lfsr & stall_mask) != 0;
    wire stall_resp = (lfsr[15:0] & {stall_mask[7:0], stall_mask[15:8]}) != 0;
    wire credit_ok = credit >= WORD_CREDIT;
    reg [63:0] open_row = 0;
    reg open_valid = 0;
    reg [63:0] act_done = 0;
    reg any_acc = 0;
    reg last_write = 0;
    reg [63:0] last_acc = 0;
    wire [63:0] req_byte = {{(64-AW){1'b0}}, req_addr} * WBYTES;
    wire [63:0] req_row = ROW_BYTES != 0 ? req_byte / ROW_BYTES : 64'd0;
    wire row_miss = ROW_BYTES != 0 && !(open_valid && req_row == open_row);
    wire row_ok = !row_miss && now >= act_done;
    wire dir_ok = !any_acc || req_write == last_write || now >= last_acc + (req_write ? RD2WR : WR2RD);
    assign req_ready = credit_ok && (req_write || count < MAX_OUT) && !stall_req && row_ok && dir_ok;
    assign resp_valid = count > 0 && q_due[head] <= now && (presented || !stall_resp);
    assign resp_data = q_data[head];
    wire accept = req_valid && req_ready;
    wire pop = resp_valid && resp_ready;

    always @(posedge clk) begin
        now <= now + 1;
        lfsr <= {lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]};
        presented <= resp_valid && !resp_ready;
        if (req_valid && row_miss) begin
            open_row <= req_row;
            open_valid <= 1;
            act_done <= now + PAGE_MISS;
        end
        if (accept) begin
            any_acc <= 1;
            last_write <= req_write;
            last_acc <= now;
        end
        if (accept && req_write) begin
            for (b = 0; b < WBYTES; b = b + 1)
                if (req_mask[b] && req_addr < WORDS) mem[req_addr][8*b +: 8] <= req_data[8*b +: 8];
        end
        if (accept && !req_write) begin
            q_data[tail] <= req_addr < WORDS ? mem[req_addr] : {8*WBYTES{1'b0}};
            q_due[tail] <= now + LATENCY;
            tail <= (tail + 1) % MAX_OUT;
        end
        if (pop) head <= (head + 1) % MAX_OUT;
        count <= count + (accept && !req_write ? 1 : 0) - (pop ? 1 : 0);
        if (credit - (accept ? WORD_CREDIT : 0) + BW_NUM > CREDIT_CAP)
            credit <= CREDIT_CAP;
        else
            credit <= credit - (accept ? WORD_CREDIT : 0) + BW_NUM;
        if (dump && !dumped) begin
            dumped <= 1;
            fd = $fopen("mem_out.bin", "wb");
            for (k = 0; k < dump_words; k = k + 1) $fwrite(fd, "%u", mem[k]);
            $fclose(fd);
        end
    end
endmodule
