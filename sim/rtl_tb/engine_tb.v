// Free-running testbench of the engine: clock generated here (Verilator --timing), the program
// and run parameters read from files the harness writes (accelml.sim.rtl_engine), no per-cycle
// Python. Files: params.hex (prog_len, mem_size, ro_bytes, max_steps, max_cycles, dump_words,
// hang_cycles, stall_mask), prog.hex (64-bit words), mem.bin (read by the memory model). At the end it
// writes mem_out.bin and status.txt and raises `finished`, which the cocotb module awaits. Built with
// ACCELML_TRACE defined, it also writes the engine's waveform to trace.fst.
`timescale 1ns/1ps
module accelml_tb #(
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
    parameter integer WR2RD = 0,
    parameter integer IMEM_DEPTH = 4096
) ();
    reg clk = 0;
    always #5 clk = ~clk;
    reg rst = 1;
    reg finished = 0;
    reg hung = 0;

    reg [63:0] params [0:7];
    reg [63:0] prog [0:IMEM_DEPTH-1];
    reg imem_we = 0;
    reg [31:0] imem_waddr = 0;
    reg [63:0] imem_wdata = 0;
    reg start = 0;
    reg dump = 0;
    reg [63:0] waited = 0;

    wire req_valid, req_ready, resp_valid, resp_ready;
    wire [AW + 1 + 8*WBYTES + WBYTES - 1:0] req_payload;
    wire [8*WBYTES-1:0] resp_data;
    wire done, error;
    wire [4:0] error_code;
    wire [31:0] error_pc;
    wire [47:0] steps;
    wire [63:0] cycles, busy_ctl, busy_dma_load, busy_dma_store, busy_mvu, busy_mfu, busy_pool;

    accelml_engine engine (
        .clk(clk), .rst(rst),
        .mem__req__valid(req_valid), .mem__req__ready(req_ready), .mem__req__payload(req_payload),
        .mem__resp__valid(resp_valid), .mem__resp__ready(resp_ready), .mem__resp__payload(resp_data),
        .imem_we(imem_we), .imem_waddr(imem_waddr), .imem_wdata(imem_wdata),
        .start(start), .prog_len(params[0]), .mem_size(params[1]), .ro_bytes(params[2]),
        .max_steps(params[3]), .max_cycles(params[4]),
        .done(done), .error(error), .error_code(error_code), .error_pc(error_pc), .steps(steps),
        .cycles(cycles), .busy_ctl(busy_ctl), .busy_dma_load(busy_dma_load), .busy_dma_store(busy_dma_store),
        .busy_mvu(busy_mvu), .busy_mfu(busy_mfu), .busy_pool(busy_pool)
    );

    accelml_memory_model #(.WBYTES(WBYTES), .AW(AW), .WORDS(WORDS), .LATENCY(LATENCY), .MAX_OUT(MAX_OUT),
                           .BW_NUM(BW_NUM), .BW_DEN(BW_DEN), .ROW_BYTES(ROW_BYTES), .PAGE_MISS(PAGE_MISS),
                           .RD2WR(RD2WR), .WR2RD(WR2RD)) memory (
        .clk(clk),
        .req_valid(req_valid), .req_ready(req_ready), .req_addr(req_payload[AW-1:0]),
        .req_write(req_payload[AW]), .req_data(req_payload[AW+1 +: 8*WBYTES]),
        .req_mask(req_payload[AW+1+8*WBYTES +: WBYTES]),
        .resp_valid(resp_valid), .resp_ready(resp_ready), .resp_data(resp_data),
        .dump(dump), .dump_words(params[5]), .stall_mask(params[7][15:0])
    );

`ifdef ACCELML_TRACE
    initial begin  // a build with --trace-fst +define+ACCELML_TRACE (EngineSim(trace=True))
        $dumpfile("trace.fst");
        $dumpvars(0, engine);
    end
`endif

    integer i, fd;
    initial begin
        $readmemh("params.hex", params);
        if (params[0] != 0) $readmemh("prog.hex", prog, 0, params[0] - 1);
        repeat (2) @(posedge clk);
        rst = 0;
        for (i = 0; i < params[0]; i = i + 1) begin
            @(negedge clk);
            imem_we = 1; imem_waddr = i; imem_wdata = prog[i];
        end
        @(negedge clk);
        imem_we = 0; start = 1;
        @(negedge clk);
        start = 0;
        while (!done && waited < params[6]) begin
            @(posedge clk);
            waited = waited + 1;
        end
        hung = !done;
        @(negedge clk);
        dump = 1;
        @(posedge clk);
        @(negedge clk);
        fd = $fopen("status.txt", "w");
        $fwrite(fd, "done %0d\nhung %0d\nerror %0d\nerror_code %0d\nerror_pc %0d\nsteps %0d\ncycles %0d\n",
                done, hung, error, error_code, error_pc, steps, cycles);
        $fwrite(fd, "busy_ctl %0d\nbusy_dma_load %0d\nbusy_dma_store %0d\nbusy_mvu %0d\nbusy_mfu %0d\nbusy_pool %0d\n",
                busy_ctl, busy_dma_load, busy_dma_store, busy_mvu, busy_mfu, busy_pool);
        $fclose(fd);
        finished = 1;
    end
endmodule
